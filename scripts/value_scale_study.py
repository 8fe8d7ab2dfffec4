"""The paper's ROME and factedit's (``value_scale: none`` / ``norm``) on the same records.

Each record is edited alone at the preset's layer. One v* optimisation serves both variants
(the value scale is a step after it): the paper's ΔW from v* as optimised, and ours from v*
rescaled to ‖W k*‖ where the MLP output is normalised. Both are measured with the evaluator
(:func:`factedit.evaluate.measure_request`, the metrics of ``factedit eval``), so the two
rows of the README's CounterFact table come from one run. Per record it also records, for
the rewrite prompt's own key k (the "{}" template, no prefix), the share of the update it
receives, c = uᵀk / uᵀk*, and cos(k, k*): the scale is exact only at the averaged k*.

    # the README's CounterFact rows (all 200 dev records)
    python scripts/value_scale_study.py --model gemma-3-270m --out docs/results/cf200-gemma.json
    # records outside the dev set (the flattened counterfact-mass.json minus dev case_ids)
    python scripts/value_scale_study.py --held-out 60 --out vs-held-out.json
    # any file `factedit eval` reads (zsRE: its prompt conventions are applied as there)
    python scripts/value_scale_study.py --source ../shared/data/zsre-dev.json --out zsre.json

Progress per record on stderr; the JSON report (summary per variant, unedited, per record)
on stdout and in --out (rewritten after every record, so an interrupted run keeps what it
measured and ``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

from factedit.delta import apply_deltas
from factedit.evaluate import measure_request, request_metrics, summarize
from factedit.evaluate.zsre import prepare_requests
from factedit.methods.rank_one import compute_key, rank_one_delta
from factedit.methods.rome import compute_rome
from factedit.models import load_model
from factedit.paths import atomic_write_text
from factedit.session import EditSession
from factedit.spec import EditRequest, load_spec

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
VARIANTS = ("norm", "none")


def source_requests(path: Path, limit: int | None) -> list[EditRequest]:
    """The requests of ``path`` as ``factedit eval`` reads them (zsRE conventions applied)."""
    spec = load_spec(path, limit=limit)
    return prepare_requests(spec.edits, spec.kind)


def dev_requests(limit: int | None) -> list[EditRequest]:
    return source_requests(DATA / "counterfact-dev.json", limit)


def held_out_requests(n: int, seed: int) -> list[EditRequest]:
    """``n`` flattened-layout records whose case_id is not in the dev set, seeded order."""
    dev = {r.case_id for r in dev_requests(None)}
    records = [r for r in load_spec(DATA / "counterfact-mass.json", limit=1000).edits]
    records = [r for r in records if r.case_id not in dev]
    random.Random(seed).shuffle(records)
    return records[:n]


def study_one(session: EditSession, request: EditRequest) -> dict:
    """Both variants of one edit, measured, with the own-key diagnostics."""
    lm, layer, state = session.lm, session.layers[0], session.state
    start = time.perf_counter()
    before = request_metrics(measure_request(lm, request))
    result = compute_rome(lm, request, layer, state)
    factor = result.delta.meta["v_rescaled_by"]
    C = state.second_moment(lm, layer)
    k_own = compute_key(lm, request, layer, ["{}"])
    u = torch.linalg.solve(C.double(), result.k_star.double())
    row = {
        "case_id": request.case_id,
        "subject": request.subject,
        "v_rescaled_by": factor,
        "share_own": float(u @ k_own.double() / (u @ result.k_star.double())),
        "cos_own": float(torch.nn.functional.cosine_similarity(k_own, result.k_star, dim=0)),
        "unedited": before,
    }
    paper, paper_norms = rank_one_delta(lm, layer, C, result.k_star, result.v_star * factor)
    row["norm_relative_norm"] = result.delta.meta["relative_norm"]
    row["none_relative_norm"] = paper_norms["relative_norm"]
    for name, delta in (("norm", result.delta), ("none", paper)):
        with apply_deltas(lm.model, [delta]):
            row[name] = request_metrics(measure_request(lm, request))
    row["seconds"] = time.perf_counter() - start
    return row


def report(args: argparse.Namespace, session: EditSession, rows: list[dict]) -> dict:
    summary = {name: summarize([r[name] for r in rows]) for name in VARIANTS}
    summary["unedited"] = summarize([r["unedited"] for r in rows])
    key = "es" if "es" in rows[0]["norm"] else "efficacy"
    lost = [r for r in rows if r["none"][key] > r["norm"][key]]
    return {
        "model": args.model,
        "identity": session.lm.base_identity,
        "layer": session.layers[0],
        "records": "held-out" if args.held_out else str(args.source),
        "n": len(rows),
        "corpus": args.corpus,
        "hparams": session.hparams.to_dict(),
        "summary": summary,
        "rewrites_lost_by_norm": [(r["case_id"], r["share_own"]) for r in lost],
        "rows": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--source", type=Path, default=DATA / "counterfact-dev.json")
    ap.add_argument("--limit", type=int, help="first N records (default: all)")
    ap.add_argument("--held-out", type=int, help="N records outside the dev set instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", default=str(DATA / "wikitext-2-raw-test.txt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    args = ap.parse_args()
    if args.held_out:
        requests = held_out_requests(args.held_out, args.seed)
    else:
        requests = source_requests(args.source, args.limit)
    rows = json.loads(args.out.read_text())["rows"] if args.resume and args.out.is_file() else []
    lm = load_model(args.model)
    session = EditSession(lm, corpus=[args.corpus])
    for i, request in enumerate(requests[len(rows) :], start=len(rows)):
        rows.append(study_one(session, request))
        r = rows[-1]
        shown = {v: [round(x, 1) for x in list(r[v].values())[:3]] for v in VARIANTS}
        print(f"{i} {r['case_id']} {r['seconds']:.0f}s share={r['share_own']:.2f} {shown}",
              file=sys.stderr, flush=True)  # fmt: skip
        atomic_write_text(args.out, json.dumps(report(args, session, rows), indent=1) + "\n")
    print(json.dumps(report(args, session, rows)["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
