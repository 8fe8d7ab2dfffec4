"""z's learning rate for MEMIT / AlphaEdit / EMMET on one model, from known facts only.

For the first N known facts (known-facts.json; never CounterFact) whose relation has another
fact with a different attribute, target_new = that attribute. z is optimised at the last
layer of the model's MEMIT window with MEMIT's other defaults and no early stop, for each
candidate lr; the recorded rule takes the smallest lr with which every fact reaches
NLL < 0.05 within the step budget. JSON out (the figures behind a preset's memit_hparams).

    python scripts/calibrate_z_lr.py --model gemma-3-270m --lrs 0.5,1,2,4 --out z-lr.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from factedit.methods.hparams import MemitHParams
from factedit.methods.state import MethodState
from factedit.methods.value import HookSite, ValueBatch, optimise_values
from factedit.models import load_model
from factedit.spec import EditRequest
from json_out import emit

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
REACHED = 0.05


def swapped_requests(facts: list[dict], n: int) -> list[EditRequest]:
    """Known facts with the attribute of the next same-relation fact as target_new."""
    requests = []
    for i, fact in enumerate(facts):
        other = next(
            (
                g
                for g in facts[i + 1 :]
                if g["relation_id"] == fact["relation_id"] and g["attribute"] != fact["attribute"]
            ),
            None,
        )
        if other is None or fact["subject"] not in fact["prompt"]:
            continue
        prompt = fact["prompt"].replace(fact["subject"], "{}", 1)
        requests.append(
            EditRequest(
                subject=fact["subject"],
                prompt=prompt,
                target_new=other["attribute"],
                target_true=fact["attribute"],
            )
        )
        if len(requests) == n:
            break
    return requests


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=16)
    parser.add_argument("--lrs", default="0.5,1,2,4")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    if lm.default_window is None:
        raise SystemExit(f"{args.model} records no MEMIT window")
    layer = lm.default_window[-1]
    requests = swapped_requests(json.loads((DATA / "known-facts.json").read_text()), args.facts)
    templates = MethodState(MemitHParams()).templates(lm)
    batch = ValueBatch.build(lm, requests, templates)
    runs = []
    for lr in (float(x) for x in args.lrs.split(",")):
        start = time.perf_counter()
        hp = MemitHParams(v_lr=lr, loss_stop=0.0)
        values = optimise_values(lm, batch, HookSite.residual(lm, layer), hp)
        final = [v.log["losses"][-1] for v in values]
        runs.append(
            {
                "v_lr": lr,
                "final_nll_mean": statistics.mean(f["nll"] for f in final),
                f"reached_nll_{REACHED}": sum(f["nll"] < REACHED for f in final),
                "kl_mean": statistics.mean(f["kl"] for f in final),
                "delta_over_z": statistics.mean(
                    v.log["delta_norm"] / v.log["v_orig_norm"] for v in values
                ),
                "seconds": time.perf_counter() - start,
            }
        )
    chosen = next((r["v_lr"] for r in runs if r[f"reached_nll_{REACHED}"] == len(requests)), None)
    report = {
        "model": args.model,
        "layer": layer,
        "steps": MemitHParams().v_num_grad_steps,
        "facts": [r.subject for r in requests],
        "runs": runs,
        "chosen_v_lr": chosen,
    }
    return emit(report, args.out)


if __name__ == "__main__":
    main()
