"""MEMIT's λ and window passes on one model, from known facts only: what each costs and
delivers.

The first N known facts (known-facts.json; never CounterFact) get the attribute of the next
same-relation fact as target_new (as ``calibrate_z_lr.py``) and are edited in one MEMIT batch
over the model's window; the next H such facts are held out (not edited; subjects disjoint).
z is optimised once (cached on disk) and, for each λ = fraction × d_in and each number of
passes of the layer loop over the window (``window_passes``), the loop is solved again. Per
setting: how much of z − z_orig the edited model reaches at the last window layer (mean and
10th percentile over the facts, 1 = all), ES of the edited facts (target_new over
target_true on their prompt), the held-out facts' share still preferring their own attribute
over the swapped one (an NS on facts nobody edited), and the largest ‖ΔW‖/‖W‖. JSON out.

    python scripts/calibrate_lambda.py --model gemma-3-270m --facts 256 --out lambda.json
    python scripts/calibrate_lambda.py --fractions 1 --passes 1,2,3 --out passes.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path

import torch

from calibrate_z_lr import swapped_requests
from factedit.delta import AppliedDeltas
from factedit.methods.keys import residual_at_subject
from factedit.methods.memit import MemitSolver
from factedit.methods.spread import compute_targets, spread_over_layers
from factedit.models import load_model
from factedit.session import EditSession
from json_out import emit
from memit_reach import scores

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def es(lm, requests) -> float:
    """% of requests whose prompt ranks target_new above target_true on the model as it is."""
    return scores(lm, requests)["es"]


def split(facts: list[dict], n: int, held: int):
    """(n edited requests, up to ``held`` held-out requests whose subjects none edits)."""
    requests = swapped_requests(facts, n + 2 * held)
    edited = requests[:n]
    subjects = {r.subject for r in edited}
    rest = [r for r in requests[n:] if r.subject not in subjects]
    return edited, rest[:held]


def solve_at(lm, session, requests, held, targets, lam: float, passes: int = 1) -> dict:
    """The batch solved with λ and ``passes`` passes, applied: reach of z, ES, held-out kept,
    ‖ΔW‖/‖W‖ (reverted)."""
    state, layers = session.state, session.layers
    state.hparams = dataclasses.replace(state.hparams, mom2_update_weight=lam, window_passes=passes)
    deltas = spread_over_layers(lm, requests, layers, targets, state, MemitSolver())
    with AppliedDeltas(lm.model) as applied:
        for delta in deltas:
            applied.add(delta)
        reached = (residual_at_subject(lm, requests, layers[-1]) - targets.z_orig).double()
        wanted = (targets.z - targets.z_orig).double()
        reach = ((reached * wanted).sum(-1) / wanted.pow(2).sum(-1)).tolist()
        return {
            "lambda": lam,
            "window_passes": passes,
            "z_reached_mean": statistics.mean(reach),
            "z_reached_p10": float(torch.tensor(reach).quantile(0.1)),
            "es": es(lm, requests),
            "held_out_kept": 100.0 - es(lm, held),
            "relative_norm_max": max(d.meta["relative_norm"] for d in deltas),
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=256)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--fractions", default="1,0.5,0.25,0.125", help="λ / d_in candidates")
    parser.add_argument("--passes", default="1", help="window_passes candidates")
    parser.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    facts = json.loads((DATA / "known-facts.json").read_text())
    edited, held = split(facts, args.facts, args.held_out)
    session = EditSession(lm, method="memit", corpus=[args.corpus], allow_large_updates=True)
    state, layers = session.state, session.layers
    state.second_moments(lm, layers)
    targets = compute_targets(lm, edited, layers[-1], state.templates(lm), state.hparams)
    d_in = state.second_moment(lm, layers[0]).shape[0]
    runs = [
        {"fraction_of_d_in": f, **solve_at(lm, session, edited, held, targets, f * d_in, p)}
        for f in (float(x) for x in args.fractions.split(","))
        for p in (int(x) for x in args.passes.split(","))
    ]
    report = {
        "model": args.model,
        "layers": list(layers),
        "d_in": d_in,
        "facts": len(edited),
        "held_out": len(held),
        "z": targets.summary(),
        "es_unedited": es(lm, edited),
        "held_out_kept_unedited": 100.0 - es(lm, held),
        "runs": runs,
    }
    return emit(report, args.out)


if __name__ == "__main__":
    main()
