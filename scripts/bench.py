"""ROME speed on this machine: seconds per edit (statistics cached) and per statistic.

For each preset: median seconds per ROME edit over CounterFact records with C already
cached, for factedit's engine (v* from the edited layer up, logits only where needed) and
for the plain full-forward v* loop measured in the same run (ratio = speed-up); seconds to
collect C for the edit layer from WikiText-2 (100,000 token vectors); peak RSS. JSON out.
The edit layer is the session's ``layers: auto`` choice (the preset's recorded layer). Data:
$FACTEDIT_DATA, else ../shared/data beside the repository.

    python scripts/bench.py --models gemma-3-270m,smollm2-135m --edits 5 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from factedit.methods.rank_one import compute_key, rank_one_delta
from factedit.methods.value import HookSite, optimise_value
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from factedit.stats import second_moment

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def time_edit(session: EditSession, request, *, fast: bool) -> float:
    """Seconds for one full ROME update (k*, v*, ΔW) with C and templates cached.

    ``fast``: v* with factedit's engine (cached prefixes, the layers from the edit layer up,
    logits only where needed); otherwise the plain full-forward loop.
    """
    lm, layer = session.lm, session.layers[0]
    C = session.state.second_moment(lm, layer)
    templates = session.state.templates(lm)
    site = HookSite.down_proj(lm, layer)
    start = time.perf_counter()
    k = compute_key(lm, request, layer, templates)
    v = optimise_value(lm, request, site, templates, session.hparams, prefix=fast).v_star
    rank_one_delta(lm, layer, C, k, v)
    return time.perf_counter() - start


def bench_model(name: str, args: argparse.Namespace) -> dict:
    lm = load_model(name, device="cpu")
    corpus = [DATA / "wikitext-2-raw-test.txt"]
    requests = load_spec(DATA / "counterfact-dev.json", limit=args.edits).edits
    session = EditSession(lm, method="rome", layers="auto", corpus=corpus, requests=requests)
    layer = session.layers[0]
    start = time.perf_counter()
    second_moment(lm, layer, corpus=corpus, use_cache=False, show_progress=False)
    stats_s = time.perf_counter() - start
    session.state.second_moment(lm, layer)  # now cached for the edit timings
    session.state.templates(lm)
    fast = [time_edit(session, r, fast=True) for r in requests]
    plain = [time_edit(session, r, fast=False) for r in requests[: args.baseline_edits]]
    return {
        "model": name,
        "layer": layer,
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
