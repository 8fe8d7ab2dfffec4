"""Benchmark: seconds to collect C = E[k kᵀ] for one layer, early stop vs the naive full pass.

    PYTHONPATH=src python scripts/bench_stats.py [--models gemma-3-270m,smollm2-135m]
        [--repeats 3] [--tokens 100000] [--baseline-tokens 8192] [--out FILE]

For each preset, at its default edit layer, over the WikiText-2 test split (or --corpus):
``second_moment(..., use_cache=False)`` (forward pass stopped after the edited layer) and, as
baselines measured in the same run with the same accumulation loop, the naive collection
(a plain full forward pass, LM-head logits over every position included) and the naive one
without those logits (all layers, ``logits_to_keep=1``). The baselines are slow, so they run
on --baseline-tokens tokens (median of --baseline-repeats) and the speed-up ratios compare
tokens per second (the cost per token does not depend on the count). Each (model, method) runs
in a child process of its own so that its peak RSS (``resource.getrusage``) is its own. JSON on
stdout (and in --out); with --baseline-tokens equal to --tokens it also reports the largest
relative difference between the early-stop and the naive C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("early_stop", "naive", "naive_no_logits")


WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw-test.txt"


def full_pass_keys(logits: bool):
    """A ``keys_fn`` that runs every layer (no early stop), with or without the LM-head logits
    over all positions (a plain ``model(input_ids)`` computes them all)."""
    import torch

    from factedit.hooks import Trace

    def keys(lm, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
        extra = {} if logits else {"logits_to_keep": 1}
        name = lm.arch.down_proj_name(layer)
        with torch.no_grad(), Trace(lm.model, name, retain_input=True, retain_output=False) as t:
            lm.model(input_ids=input_ids.to(lm.device), use_cache=False, **extra)
        return t.input.reshape(-1, t.input.shape[-1])

    return keys


def run_child(args: argparse.Namespace) -> dict:
    """Load the model once, collect --repeats times with one method, report timings."""
    import torch

    from factedit.models import load_model
    from factedit.stats import resolve_corpus, second_moment
    from factedit.stats.collect import Accumulator, accumulate
    from factedit.stats.corpus import token_sequences

    if args.threads:
        from factedit.threads import choose_threads

        choose_threads(args.threads)  # kept by load_model
    lm = load_model(args.child_model, device=args.device)
    layer = lm.default_layer if lm.default_layer is not None else lm.arch.num_layers // 2
    paths = resolve_corpus(args.corpus or [str(WIKITEXT)])
    method, n_tokens = args.child_method, args.child_tokens

    def naive() -> torch.Tensor:
        seqs = token_sequences(lm.tokenizer, paths, n_tokens, args.seq_len)
        keys_fn = full_pass_keys(logits=method == "naive")
        *_, state = accumulate(
            lm, layer, seqs, Accumulator(), n_tokens=n_tokens, batch_size=args.batch_size,
            keys_fn=keys_fn,
        )  # fmt: skip
        return (state.total / state.count).float().cpu()

    def early() -> torch.Tensor:
        return second_moment(
            lm, layer, corpus=paths, n_tokens=n_tokens, seq_len=args.seq_len,
            batch_size=args.batch_size, show_progress=False, use_cache=False,
        )  # fmt: skip

    collect = early if method == "early_stop" else naive
    seconds, result = [], None
    for _ in range(args.child_repeats):
        start = time.perf_counter()
        result = collect()
        seconds.append(time.perf_counter() - start)
    if args.child_result:
        torch.save(result, args.child_result)
    return {
        "layer": layer,
        "module": lm.arch.down_proj_name(layer),
        "d_in": result.shape[0],
        "tokens": n_tokens,
        "seconds": [round(s, 3) for s in seconds],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def measure(args: argparse.Namespace, model: str, method: str, result: Path) -> dict:
    baseline = method != "early_stop"
    tokens = args.baseline_tokens if baseline else args.tokens
    repeats = args.baseline_repeats if baseline else args.repeats
    cmd = [sys.executable, __file__, "--child-model", model, "--child-method", method]
    cmd += ["--child-result", str(result), "--child-repeats", str(repeats)]
    cmd += ["--child-tokens", str(tokens), "--seq-len", str(args.seq_len)]
    cmd += ["--batch-size", str(args.batch_size), "--device", args.device]
    cmd += ["--threads", str(args.threads)]
    for corpus in args.corpus or []:
        cmd += ["--corpus", corpus]
    env = {**os.environ, "FACTEDIT_QUIET": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{model} {method} failed:\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    median = statistics.median(data["seconds"])
    data.update(median_s=round(median, 3), tokens_per_s=round(tokens / median, 1))
    return data


def bench_model(args: argparse.Namespace, model: str, workdir: Path) -> dict:
    """All methods on one model; the ratios compare tokens per second."""
    import torch

    runs = {m: measure(args, model, m, workdir / f"{model}-{m}.pt") for m in METHODS}
    results = {m: torch.load(workdir / f"{model}-{m}.pt") for m in METHODS}
    first = runs["early_stop"]
    report = {"model": model, "layer": first["layer"], "module": first["module"]}
    report["d_in"] = first["d_in"]
    for m in METHODS:
        report[m] = {k: v for k, v in runs[m].items() if k not in {"layer", "module", "d_in"}}
    rate = first["tokens_per_s"]
    report["speedup_vs_naive"] = round(rate / runs["naive"]["tokens_per_s"], 2)
    report["speedup_vs_naive_no_logits"] = round(rate / runs["naive_no_logits"]["tokens_per_s"], 2)
    if args.tokens == args.baseline_tokens:
        ref = results["naive"]
        diff = (results["early_stop"] - ref).abs().max().item() / ref.abs().max().item()
        report["max_rel_diff_early_vs_naive"] = diff
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gemma-3-270m,smollm2-135m")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--baseline-tokens", type=int, default=8192, help="tokens for the baselines")
    p.add_argument("--baseline-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--corpus",
        action="append",
        help="corpus file(s) (default: the WikiText-2 test split in ../shared/data)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--child-model", help=argparse.SUPPRESS)
    p.add_argument("--child-method", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--child-result", help=argparse.SUPPRESS)
    p.add_argument("--child-tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-repeats", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import tempfile

    args = parse(argv)
    if args.child_model:
        print(json.dumps(run_child(args)))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        models = [bench_model(args, m, Path(tmp)) for m in args.models.split(",") if m]
    report = {
        "benchmark": "second_moment (one layer, cache disabled)",
        "tokens": args.tokens,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "baseline_tokens": args.baseline_tokens,
        "baseline_repeats": args.baseline_repeats,
        "device": args.device,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "models": models,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
