"""Benchmark the evaluator: batched scoring / generation vs per-prompt loops, and edits/minute.

    PYTHONPATH=src python scripts/bench_eval.py [--model gemma-3-270m] [--records 4]
        [--gen-records 1] [--greedy-records 4] [--pooled-records 32] [--edits 2]
        [--repeats 3] [--layer N] [--threads N] [--out FILE] [--skip-full]

On CounterFact records (../shared/data/counterfact-dev.json), all in one run:

- ``scoring``: every prompt x target of a record (rewrite, paraphrases, neighbors x new/true)
  scored by ``score_continuations`` (bucketed batches, one pass per prompt, KV-cache
  continuation) vs the naive loop ``score_unbatched`` (one pass per prompt-target pair).
  Reports pairs/s and the largest |Δ log-prob| between the two.
- ``generation``: the record's generation prompts sampled to 100 tokens (top-k 5, KV cache) in
  one batch vs one prompt at a time. Reports prompts/s and new tokens/s.
- ``greedy_answers``: the generation-based protocol's greedy continuations (12 tokens) of
  every scored prompt of a record (rewrite, paraphrases, neighbours) in one batch with the KV
  cache vs one prompt at a time. Reports prompts/s and the share of identical continuations.
- ``pooled_requests``: every prompt of ``--pooled-records`` records of ``--pooled-data``
  (default: counterfact-mass.json, 3 prompts a record) measured (scores and greedy
  continuations) by one ``measure_requests`` call, their prompts pooled, vs one
  ``measure_request`` per record (how many edits on one model are measured: MEMIT batches,
  sequential streams, ``eval`` of an edited model). Reports prompts/s and whether the
  continuations agree.
- ``full_eval``: a full CounterFact evaluation of ``--edits`` records (ROME edit at the
  preset's layer, then every metric incl. GE before and after) with the batched evaluator vs
  the per-prompt baseline (naive scoring loop + one-prompt generation). The edit is computed
  once per record and its time counted in both; edits/minute = 60 / (edit + measurement).

Micro-benchmarks report the median of ``--repeats`` runs; ``full_eval`` the median over
edits. JSON on stdout (and in --out). On a shared, busy machine pass ``--threads 1``: with
more OpenMP threads than free cores every matrix product waits on the others (10x slower).
The --data and WikiText-2 defaults are under $FACTEDIT_DATA when it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FACTEDIT_DATA", REPO.parent / "shared" / "data"))
DATA = DATA_DIR / "counterfact-dev.json"
WIKITEXT = DATA_DIR / "wikitext-2-raw-test.txt"


def _items(lm, request):
    from factedit.tokens import prompt_token_ids, target_token_ids

    tok = lm.tokenizer
    prompts = [request.rewrite_prompt, *request.paraphrases, *request.neighborhood]
    targets = [
        target_token_ids(tok, request.target_new),
        target_token_ids(tok, request.target_true),
    ]
    return [(prompt_token_ids(tok, p), t) for p in prompts for t in targets]


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_scoring(lm, requests, repeats: int) -> dict:
    from factedit.evaluate.scoring import score_continuations, score_unbatched

    items = [_items(lm, r) for r in requests]
    n = sum(len(i) for i in items)
    fast, got = _timed(lambda: [score_continuations(lm, i) for i in items], repeats)
    slow, ref = _timed(lambda: [score_unbatched(lm, i) for i in items], repeats)
    diff = max(
        abs(a - b)
        for rs, ss in zip(got, ref, strict=True)
        for r, s in zip(rs, ss, strict=True)
        for a, b in zip(r.logprobs, s.logprobs, strict=True)
    )
    return {
        "records": len(requests),
        "prompt_target_pairs": n,
        "batched_pairs_per_s": n / fast,
        "loop_pairs_per_s": n / slow,
        "speedup": slow / fast,
        "max_abs_logprob_diff": diff,
    }


def bench_generation(lm, requests, repeats: int) -> dict:
    from factedit.evaluate.measure import sample_generations

    prompts = sum(len(r.generation_prompts) for r in requests)

    def run(batch_size):
        return [sample_generations(lm, r, batch_size=batch_size) for r in requests]

    fast, gens = _timed(lambda: run(None), repeats)
    slow, _ = _timed(lambda: run(1), repeats)
    tokens = sum(g.n_tokens for gs in gens for g in gs)
    return {
        "records": len(requests),
        "prompts": prompts,
        "new_tokens": tokens,
        "batched_prompts_per_s": prompts / fast,
        "loop_prompts_per_s": prompts / slow,
        "batched_tokens_per_s": tokens / fast,
        "loop_tokens_per_s": tokens / slow,
        "speedup": slow / fast,
    }


def bench_greedy(lm, requests, repeats: int) -> dict:
    from factedit.evaluate.greedy import ANSWER_TOKENS
    from factedit.evaluate.measure import greedy_continuations

    groups = [[r.rewrite_prompt, *r.paraphrases, *r.neighborhood] for r in requests]
    prompts = sum(len(g) for g in groups)

    def run(batch_size):
        return [greedy_continuations(lm, g, ANSWER_TOKENS, batch_size) for g in groups]

    fast, batched = _timed(lambda: run(None), repeats)
    slow, alone = _timed(lambda: run(1), repeats)
    pairs = [
        (a, b) for bs, ls in zip(batched, alone, strict=True) for a, b in zip(bs, ls, strict=True)
    ]
    return {
        "records": len(requests),
        "prompts": prompts,
        "answer_tokens": ANSWER_TOKENS,
        "batched_prompts_per_s": prompts / fast,
        "loop_prompts_per_s": prompts / slow,
        "speedup": slow / fast,
        "identical_share": sum(a == b for a, b in pairs) / len(pairs),
    }


def bench_pooled(lm, requests, repeats: int) -> dict:
    from factedit.evaluate.greedy import ANSWER_TOKENS
    from factedit.evaluate.measure import measure_request, measure_requests

    prompts = sum(1 + len(r.paraphrases) + len(r.neighborhood) for r in requests)
    fast, pooled = _timed(
        lambda: measure_requests(lm, requests, answer_tokens=ANSWER_TOKENS), repeats
    )
    slow, alone = _timed(
        lambda: [measure_request(lm, r, answer_tokens=ANSWER_TOKENS) for r in requests], repeats
    )
    said = [
        (a.continuation, b.continuation)
        for ma, mb in zip(pooled, alone, strict=True)
        for a, b in zip(ma.prompts, mb.prompts, strict=True)
    ]
    return {
        "records": len(requests),
        "prompts": prompts,
        "answer_tokens": ANSWER_TOKENS,
        "pooled_prompts_per_s": prompts / fast,
        "per_request_prompts_per_s": prompts / slow,
        "speedup": slow / fast,
        "identical_share": sum(a == b for a, b in said) / len(said),
    }


def bench_full(lm, requests, layer: int) -> dict:
    import factedit.evaluate.measure as measure
    from factedit.delta import apply_deltas
    from factedit.evaluate.scoring import score_continuations, score_unbatched
    from factedit.session import EditSession

    session = EditSession(lm, method="rome", layers=(layer,), corpus=[WIKITEXT])
    session.compute([requests[0]])  # warm: statistics and context templates are cached

    def naive(lm_, items, batch_size=None):
        return score_unbatched(lm_, items)

    def evaluate(request, deltas, baseline: bool) -> float:
        measure.score_continuations = naive if baseline else score_continuations
        try:
            t0 = time.perf_counter()
            kw = {"generation": True, "batch_size": 1 if baseline else None}
            measure.measure_request(lm, request, **kw)
            with apply_deltas(lm.model, deltas):
                measure.measure_request(lm, request, **kw)
            return time.perf_counter() - t0
        finally:
            measure.score_continuations = score_continuations

    rows = []
    for request in requests:
        t0 = time.perf_counter()
        deltas = session.compute([request])
        edit_s = time.perf_counter() - t0
        rows.append(
            {
                "edit_s": edit_s,
                "batched_measure_s": evaluate(request, deltas, baseline=False),
                "loop_measure_s": evaluate(request, deltas, baseline=True),
            }
        )
    edit = statistics.median(r["edit_s"] for r in rows)
    fast = statistics.median(r["batched_measure_s"] for r in rows)
    slow = statistics.median(r["loop_measure_s"] for r in rows)
    return {
        "edits": len(requests),
        "layer": layer,
        "median_edit_s": edit,
        "median_batched_measure_s": fast,
        "median_loop_measure_s": slow,
        "batched_edits_per_minute": 60.0 / (edit + fast),
        "loop_edits_per_minute": 60.0 / (edit + slow),
        "speedup": (edit + slow) / (edit + fast),
        "measure_speedup": slow / fast,
        "per_edit": rows,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--records", type=int, default=4, help="records for the scoring bench")
    parser.add_argument("--gen-records", type=int, default=1, help="records for generation")
    parser.add_argument("--greedy-records", type=int, default=4, help="records for greedy")
    parser.add_argument("--pooled-records", type=int, default=32, help="records pooled")
    parser.add_argument(
        "--pooled-data",
        type=Path,
        default=DATA_DIR / "counterfact-mass.json",
        help="records for the pooled measurement (default: the mass file, 3 prompts each)",
    )
    parser.add_argument("--edits", type=int, default=2, help="records for the full evaluation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", type=int, default=None, help="edit layer (default: preset)")
    parser.add_argument("--skip-full", action="store_true", help="skip the full evaluation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("FACTEDIT_QUIET", "1")

    import torch
    import transformers

    if args.threads:
        from factedit.threads import choose_threads

        choose_threads(args.threads)  # kept by load_model

    from factedit.models import load_model
    from factedit.spec import load_spec

    lm = load_model(args.model, device="cpu")
    edits = load_spec(args.data).edits
    report: dict = {
        "benchmark": "bench_eval",
        "model": lm.name,
        "identity": lm.identity,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "repeats": args.repeats,
    }
    report["scoring"] = bench_scoring(lm, edits[: args.records], args.repeats)
    print(json.dumps({"scoring": report["scoring"]}), file=sys.stderr)
    report["generation"] = bench_generation(lm, edits[: args.gen_records], args.repeats)
    print(json.dumps({"generation": report["generation"]}), file=sys.stderr)
    report["greedy_answers"] = bench_greedy(lm, edits[: args.greedy_records], args.repeats)
    print(json.dumps({"greedy_answers": report["greedy_answers"]}), file=sys.stderr)
    pooled = load_spec(args.pooled_data, limit=args.pooled_records).edits
    report["pooled_requests"] = {
        "data": args.pooled_data.name,
        **bench_pooled(lm, pooled, args.repeats),
    }
    print(json.dumps({"pooled_requests": report["pooled_requests"]}), file=sys.stderr)
    if not args.skip_full:
        layer = args.layer if args.layer is not None else (lm.default_layer or 0)
        report["full_eval"] = bench_full(lm, edits[: args.edits], layer)
    report["load_average_end"] = list(os.getloadavg())
    from json_out import emit

    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
