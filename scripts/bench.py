"""ROME speed on this machine: seconds per edit (statistics cached) and per statistic.

For each preset: median seconds per ROME edit over CounterFact records with C already
cached, for factedit's engine (v* from the edited layer up, logits only where needed) and
for the plain full-forward v* loop measured in the same run (ratio = speed-up); seconds to
collect C for the edit layer from WikiText-2 (100,000 token vectors); peak RSS. JSON out.

    python scripts/bench.py --models gemma-3-270m,smollm2-135m --edits 5 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from factedit.editing import Editor
from factedit.methods.rome import compute_key, compute_value, rank_one_delta
from factedit.models import load_model
from factedit.spec import load_spec
from factedit.stats import second_moment

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def time_edit(editor: Editor, request, *, fast: bool) -> float:
    """Seconds for one full ROME update (k*, v*, ΔW) with C and templates cached."""
    lm, layer = editor.lm, editor.layer
    C = editor.statistics(layer)
    templates = editor.templates()
    start = time.perf_counter()
    k = compute_key(lm, request, layer, templates)
    v, _ = compute_value(lm, request, layer, templates, editor.hparams, fast=fast)
    rank_one_delta(lm, layer, C, k, v)
    return time.perf_counter() - start


def bench_model(name: str, args: argparse.Namespace) -> dict:
    lm = load_model(name, device="cpu")
    corpus = [DATA / "wikitext-2-raw-test.txt"]
    editor = Editor(lm, layers="auto", corpus=corpus)
    start = time.perf_counter()
    second_moment(lm, editor.layer, corpus=corpus, use_cache=False, show_progress=False)
    stats_s = time.perf_counter() - start
    editor.statistics(editor.layer)  # now cached for the edit timings
    editor.templates()
    requests = load_spec(DATA / "counterfact-dev.json", limit=args.edits).edits
    fast = [time_edit(editor, r, fast=True) for r in requests]
    plain = [time_edit(editor, r, fast=False) for r in requests[: args.baseline_edits]]
    return {
        "model": name,
        "layer": editor.layer,
        "stats_seconds_100k_tokens": stats_s,
        "edit_seconds_median": statistics.median(fast),
        "edit_seconds": fast,
        "plain_edit_seconds_median": statistics.median(plain),
        "plain_edit_seconds": plain,
        # the same records on both sides (the step count differs from record to record)
        "speedup_vs_plain": statistics.median(plain) / statistics.median(fast[: len(plain)]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,smollm2-135m")
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--baseline-edits", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = {
        "benchmark": "rome-edit",
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
        "torch": torch.__version__,
        "reference": "most-used open-source editor: about 65 s per ROME edit on smollm2-135m "
        "on this 2-core machine (issue #2)",
        "models": [bench_model(name, args) for name in args.models.split(",")],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
