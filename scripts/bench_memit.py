"""MEMIT at scale on this machine: N facts in one batch, against ROME's per-edit time.

On the first N records of the flattened mass-editing file (counterfact-mass.json: rewrite,
rephrase and locality prompts), with the statistics of every window layer already cached
(collected first, not timed):

- MEMIT: one batch of N facts, peak RSS, and its time in two phases: the z optimisation
  (each z is kept on disk as it is done, so an interrupted run resumes; ``z_cached`` says how
  many came from the cache), then keys + solves for every layer; seconds per fact = z seconds
  per freshly optimised fact + keys-and-solve seconds / N. When fewer than ``--z-sample``
  z were optimised in this run (a resumed run), z is timed on a fresh sample of that many of
  the same records, neither read from nor written to the cache;
- ES / PS / NS (teacher-forced probability comparison), token accuracy and greedy-generation
  scores of all N on the unedited model and on the model carrying the batch, with the
  prompts that pass (a) and fail (c) counted (``gap_a_c``, as ``protocol_gap.py``);
- ROME: seconds per edit, median over the first ``--rome-facts`` of the same records,
  each computed on the unedited model, measured in the same run;
- seconds per fact of MEMIT against ROME's seconds per edit (the ratio).

``--z-steps`` cuts the z optimisation (for a memory-only run at 10,000 facts: the steps
do not change the memory; the JSON says so, and its quality numbers are then meaningless);
``--hparams`` sets hyper-parameters over the preset's (recorded under ``hparams``);
``--drop-repeats`` keeps the first of each repeated (subject, prompt) record.

    python scripts/bench_memit.py --facts 1000 --out docs/bench/memit-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from factedit.console import progress
from factedit.evaluate.measure import measure_requests
from factedit.evaluate.metrics import request_metrics, summarize
from factedit.methods.spread import compute_targets
from factedit.methods.value import HookSite
from factedit.methods.zcache import ZCache
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from json_out import add_hparams_option, emit
from protocol_gap import measurement_gap

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=1000)
    parser.add_argument("--rome-facts", type=int, default=20)
    parser.add_argument("--method", default="memit")
    parser.add_argument(
        "--z-sample", type=int, default=64, help="fewest fresh z the z time is taken over"
    )
    parser.add_argument("--records", type=Path, default=DATA / "counterfact-mass.json")
    parser.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--z-steps", type=int, help="cut the z optimisation (memory runs)")
    add_hparams_option(parser, "over the preset's")
    parser.add_argument("--no-measure", action="store_true", help="skip the scores")
    parser.add_argument(
        "--answer-tokens", type=int, default=12, help="greedy tokens per prompt (protocol c)"
    )
    parser.add_argument(
        "--drop-repeats",
        action="store_true",
        help="keep only the first record of each (subject, prompt): the mass file repeats 79 "
        "beyond record 1,068, which a spec refuses (the 10,000-fact memory run needs them out)",
    )
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


#: The metrics reported, by protocol: (a) probability comparison, (b) top-1 token accuracy
#: under teacher forcing, (c) greedy generation (factedit.evaluate.protocols).
SCORES = ("s", "es", "ps", "ns", "efficacy", "paraphrase", "specificity")
SCORES += ("gen_es", "gen_ps", "gen_ns")
#: Requests measured together (their prompts pooled), one step of the progress bar.
SCORE_CHUNK = 64


def scores(lm, requests, answer_tokens: int, label: str) -> dict:
    """Mean scores (×100) of :data:`SCORES` over ``requests`` on the model as it is, and
    ``gap_a_c``: where protocols (a) and (c) disagree (``protocol_gap.measurement_gap``)."""
    measured = []
    with progress() as bar:
        task = bar.add_task(f"scores, {label}", total=len(requests))
        for start in range(0, len(requests), SCORE_CHUNK):
            chunk = requests[start : start + SCORE_CHUNK]
            measured += measure_requests(lm, chunk, answer_tokens=answer_tokens)
            bar.advance(task, len(chunk))
    means = summarize([request_metrics(m) for m in measured])
    gap = measurement_gap((m.to_dict() for m in measured), examples=12)
    return {**{k: v for k, v in means.items() if k in SCORES}, "gap_a_c": gap}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rome_seconds(lm, requests, corpus: Path) -> list[float]:
    """Seconds per ROME edit (statistics and templates warmed first, not timed)."""
    session = EditSession(lm, method="rome", corpus=[corpus])
    session.compute(requests[:1])
    times = []
    for request in requests:
        start = time.perf_counter()
        session.compute([request])
        times.append(time.perf_counter() - start)
    return times


def first_of_each(path: Path) -> Path:
    """A copy of the records file without repeated (subject, prompt) pairs (first kept)."""
    seen, kept = set(), []
    for record in json.loads(path.read_text()):
        key = (record["subject"], record["prompt"])
        if key not in seen:
            seen.add(key)
            kept.append(record)
    out = Path(tempfile.mkdtemp()) / path.name
    out.write_text(json.dumps(kept))
    return out


def count_cached(lm, session: EditSession, requests, templates) -> int:
    """How many of the requests' z are already on disk (from an interrupted run)."""
    site = HookSite.residual(lm, session.layers[-1])
    cache = ZCache(lm, site, templates, session.hparams)
    return sum(cache.get(r) is not None for r in requests)


def time_z(lm, session: EditSession, requests: list, z_sample: int) -> tuple[float, int, int]:
    """Compute every z (each kept on disk as it is done, so a rerun resumes) -> (seconds, z
    timed, z found cached). Where fewer than ``z_sample`` were fresh, the time is taken again
    over the first ``z_sample`` facts, neither read from nor written to the cache."""
    templates = session.state.templates(lm)
    z_cached = count_cached(lm, session, requests, templates)
    z_layer = session.layers[-1]
    start = time.perf_counter()
    compute_targets(lm, requests, z_layer, templates, session.hparams)
    z_s, z_fresh = time.perf_counter() - start, len(requests) - z_cached
    if z_fresh < min(z_sample, len(requests)):
        sample = requests[:z_sample]
        start = time.perf_counter()
        compute_targets(lm, sample, z_layer, templates, session.hparams, use_cache=False)
        z_s, z_fresh = time.perf_counter() - start, len(sample)
    return z_s, z_fresh, z_cached


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    lm = load_model(args.model, device="cpu")
    records = first_of_each(args.records) if args.drop_repeats else args.records
    requests = list(load_spec(records, limit=args.facts).edits)
    hparams = dict(args.hparams)
    if args.z_steps is not None:
        hparams["v_num_grad_steps"] = args.z_steps
    session = EditSession(lm, method=args.method, corpus=[args.corpus], hparams=hparams)
    session.state.second_moments(lm, session.layers)  # cached before timing
    z_s, z_fresh, z_cached = time_z(lm, session, requests, args.z_sample)
    start = time.perf_counter()
    deltas = session.compute(requests)  # every z from the cache now: keys + solves
    spread_s = time.perf_counter() - start
    # compute left the model as is
    before = None if args.no_measure else scores(lm, requests, args.answer_tokens, "unedited")
    session.apply(deltas)
    after = None if args.no_measure else scores(lm, requests, args.answer_tokens, "edited")
    session.revert()
    rome = rome_seconds(lm, requests[: args.rome_facts], args.corpus) if args.rome_facts else []
    per_fact = z_s / z_fresh + spread_s / len(requests)
    rome_median = statistics.median(rome) if rome else None
    report = {
        "benchmark": "memit-batch",
        "model": args.model,
        "method": args.method,
        "records": args.records.name,
        "repeats_dropped": args.drop_repeats,
        "facts": len(requests),
        "layers": list(session.layers),
        "z_steps": session.hparams.v_num_grad_steps,
        "z_steps_cut": args.z_steps is not None,
        "window_passes": session.hparams.window_passes,
        "hparams": args.hparams,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "memit_seconds": per_fact * len(requests),
        "z_cached": z_cached,
        "z_timed_facts": z_fresh,
        "z_seconds_per_fact": z_s / z_fresh,
        "keys_and_solve_seconds": spread_s,
        "memit_seconds_per_fact": per_fact,
        "rome_seconds_per_edit_median": rome_median,
        "rome_edits_timed": len(rome),
        "ratio_memit_per_fact_to_rome": None if not rome_median else per_fact / rome_median,
        "peak_rss_gib": peak_rss_gib(),
        "answer_tokens": args.answer_tokens,
        "metrics_unedited": before,
        "metrics_edited": after,
        "updates": [
            {k: v for k, v in d.meta.items() if not isinstance(v, (list, dict))} for d in deltas
        ],
    }
    return emit(report, args.out)


if __name__ == "__main__":
    main()
