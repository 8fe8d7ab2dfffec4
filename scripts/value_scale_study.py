"""Where the norm value scale (``value_scale: norm``) loses a rewrite, and why.

For CounterFact records outside the dev set (the flattened ``counterfact-mass.json``, minus
every case_id of ``counterfact-dev.json``), each edited alone at the preset's layer: one v*
optimisation gives both variants, the paper's v* (``none``) and v* rescaled to ‖W k*‖
(``norm``). Per record it records the rewrite / paraphrase / neighbour outcome of both, and
for the rewrite prompt's own key k (the "{}" template, no prefix) the share of the update it
receives, c = uᵀk / uᵀk*, and cos(k, k*).

    python scripts/value_scale_study.py --model gemma-3-270m --records 60 --out vs.json

JSON on stdout (and in --out): per record, and a summary.
"""

from __future__ import annotations

import argparse
import os
import json
import random
import sys
from pathlib import Path

import torch

from factedit.delta import apply_deltas
from factedit.evaluate import measure_request, request_metrics
from factedit.methods.rank_one import compute_key, rank_one_delta
from factedit.methods.rome import compute_rome
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import EditRequest

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def held_out_requests(n: int, seed: int) -> list[EditRequest]:
    """``n`` mass-layout records whose case_id is not in the dev set, in a seeded order."""
    dev = {r["case_id"] for r in json.loads((DATA / "counterfact-dev.json").read_text())}
    records = [r for r in json.loads((DATA / "counterfact-mass.json").read_text())]
    records = [r for r in records if r["case_id"] not in dev and r["subject"] in r["prompt"]]
    random.Random(seed).shuffle(records)
    out = []
    for r in records[:n]:
        out.append(
            EditRequest(
                subject=r["subject"],
                prompt=r["prompt"].replace(r["subject"], "{}", 1),
                target_new=r["target_new"],
                target_true=r["ground_truth"],
                paraphrases=(r["rephrase_prompt"],),
                neighborhood=(r["locality_prompt"],),
                neighborhood_answers=(r["locality_ground_truth"],),
                case_id=str(r["case_id"]),
            )
        )
    return out


def study_one(session: EditSession, request: EditRequest) -> dict:
    lm, layer, state = session.lm, session.layers[0], session.state
    result = compute_rome(lm, request, layer, state)
    factor = result.delta.meta["v_rescaled_by"]
    C = state.second_moment(lm, layer)
    k_star = result.k_star
    k_own = compute_key(lm, request, layer, ["{}"])
    u = torch.linalg.solve(C.double(), k_star.double())
    row = {
        "case_id": request.case_id,
        "subject": request.subject,
        "v_rescaled_by": factor,
        "share_own": float(u @ k_own.double() / (u @ k_star.double())),
        "cos_own": float(torch.nn.functional.cosine_similarity(k_own, k_star, dim=0)),
    }
    unscaled, _ = rank_one_delta(lm, layer, C, k_star, result.v_star * factor)
    for name, delta in (("norm", result.delta), ("none", unscaled)):
        with apply_deltas(lm.model, [delta]):
            metrics = request_metrics(measure_request(lm, request))
        row[name] = {k: metrics[k] for k in ("es", "ps", "ns")}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--records", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", default=str(DATA / "wikitext-2-raw-test.txt"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lm = load_model(args.model)
    session = EditSession(lm, corpus=[args.corpus])
    rows = []
    for i, request in enumerate(held_out_requests(args.records, args.seed)):
        rows.append(study_one(session, request))
        print(i, json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {
        name: {m: sum(r[name][m] for r in rows) / len(rows) for m in ("es", "ps", "ns")}
        for name in ("norm", "none")
    }
    lost = [r for r in rows if r["none"]["es"] > r["norm"]["es"]]
    report = {
        "model": args.model,
        "layer": session.layers[0],
        "records": len(rows),
        "summary": summary,
        "rewrites_lost_by_norm": [r["case_id"] for r in lost],
        "share_own_lost": [r["share_own"] for r in lost],
        "share_own_median": sorted(r["share_own"] for r in rows)[len(rows) // 2],
        "rows": rows,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
