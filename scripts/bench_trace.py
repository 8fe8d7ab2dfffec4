"""Benchmark: seconds per traced fact, fast engine versus the plain reference, same run.

    PYTHONPATH=src python scripts/bench_trace.py --out bench_trace.json [--threads 1]

One fact (default: the Eiffel Tower prompt on gemma-3-270m), all three kinds, 10 noise
samples, window 10. Each run times a full trace with the engine, and the reference on a
spread-out subset of the sites (all noise samples of each). Every reference forward pass is
one batch-1 pass over the whole prompt, so its cost per pass does not depend on the site:
the reference's seconds per fact are (passes per fact) × (median seconds per pass). Pass
``--full-reference`` to time the whole reference grid instead (hours on a CPU). The engine's
grids are compared with the reference on every timed site (max abs difference) and across runs
(must be identical). Prints and writes JSON; all times are medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from factedit.models import load_model
from factedit.tokens import locate_subject
from factedit.trace import reference
from factedit.trace.fact import build_problem, compute_grids, grid_sites
from factedit.trace.patching import KINDS, last_logits, plain_answer_probs
from json_out import emit


def _timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--prompt", default="The Eiffel Tower is located in the city of")
    ap.add_argument("--subject", default="The Eiffel Tower")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference-sites", type=int, default=24, help="sites timed per run")
    ap.add_argument("--full-reference", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args()


def _timed_runs(lm, problem, sites: list, args: argparse.Namespace) -> dict[str, Any]:
    """Per run: the engine's whole trace, and the reference on a spread-out subset of
    ``sites`` (every sample of each), compared site by site with the engine's grid."""
    S = problem.samples
    runs: dict[str, Any] = {"engine_s": [], "ref_pass_s": [], "diffs": [], "grids": []}
    for run in range(args.runs):
        with torch.inference_mode():
            dt, (p_corrupt, g) = _timed(lambda: compute_grids(lm, problem, KINDS, "fast"))
        runs["engine_s"].append(dt)
        runs["grids"].append(g)
        if args.full_reference:
            chosen = list(range(len(sites)))
        else:
            step = max(1, len(sites) // args.reference_sites)
            chosen = list(range(run % step, len(sites), step))[: args.reference_sites]
        timed_sites = [sites[i] for i in chosen]
        dt, ref = _timed(lambda: reference.reference_sites(lm, problem, timed_sites))  # noqa: B023
        runs["ref_pass_s"].append(dt / (len(chosen) * S))
        fast = torch.tensor([g[sites[i].kind][sites[i].tokens[0], sites[i].layer] for i in chosen])
        runs["diffs"].append(float((fast - ref.double().mean(dim=1)).abs().max()))
        print(
            f"run {run + 1}/{args.runs}: engine {runs['engine_s'][-1]:.1f} s/fact; reference "
            f"{runs['ref_pass_s'][-1] * 1000:.1f} ms/pass -> "
            f"{runs['ref_pass_s'][-1] * (len(sites) + 1) * S:.0f} s/fact",
            file=sys.stderr,
        )
    runs["p_corrupt"], runs["sites_timed"] = p_corrupt, len(chosen)
    return runs


def main() -> int:
    args = _parse_args()
    if args.threads:
        from factedit.threads import choose_threads

        choose_threads(args.threads)  # kept by load_model

    lm = load_model(args.model, device=args.device)
    located = locate_subject(lm.tokenizer, args.prompt, args.subject)
    with torch.inference_mode():
        problem, std = build_problem(
            lm, located, target=None, samples=args.samples, noise="3x", window=args.window, seed=0
        )
    T, L, S = problem.num_tokens, lm.arch.num_layers, problem.samples
    sites = [s for kind in KINDS for s in grid_sites(kind, T, L)]
    passes_per_fact = (len(sites) + 1) * S  # every site and sample, plus p_corrupt
    ids = problem.input_ids.to(lm.device)

    load_before = os.getloadavg()
    runs = _timed_runs(lm, problem, sites, args)
    engine_s, ref_pass_s, grids = runs["engine_s"], runs["ref_pass_s"], runs["grids"]
    # how much of the gain is only projecting the last position (reference passes do all)
    with torch.inference_mode():
        plain = [_timed(lambda: plain_answer_probs(lm.model, ids, 0))[0] for _ in range(5)]
        last = [_timed(lambda: last_logits(lm, ids))[0] for _ in range(5)]

    engine_med = statistics.median(engine_s)
    ref_fact = statistics.median(ref_pass_s) * passes_per_fact
    identical = all(
        all(torch.equal(torch.from_numpy(g[k]), torch.from_numpy(grids[0][k])) for k in KINDS)
        for g in grids
    )
    report = {
        "benchmark": "causal trace, one fact, all three kinds",
        "model": lm.name,
        "device": str(lm.device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "prompt": args.prompt,
        "subject": args.subject,
        "tokens": T,
        "layers": L,
        "samples": S,
        "window": args.window,
        "noise_std": std,
        "runs": args.runs,
        "engine_seconds_per_fact": engine_med,
        "engine_seconds_runs": engine_s,
        "reference_seconds_per_fact": ref_fact,
        "reference_mode": "full grid" if args.full_reference else "extrapolated from timed passes",
        "reference_passes_per_fact": passes_per_fact,
        "reference_seconds_per_pass": statistics.median(ref_pass_s),
        "reference_seconds_per_pass_runs": ref_pass_s,
        "reference_sites_timed_per_run": runs["sites_timed"],
        "speedup": ref_fact / engine_med,
        "max_abs_diff_vs_reference": max(runs["diffs"]),
        "engine_identical_across_runs": identical,
        "p_clean": problem.p_clean,
        "p_corrupt": runs["p_corrupt"],
        "batch1_pass_seconds_all_logits": statistics.median(plain),
        "batch1_pass_seconds_last_logits_only": statistics.median(last),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
