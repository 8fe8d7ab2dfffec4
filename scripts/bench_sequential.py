"""Sequential editing: N facts in batches, plain MEMIT against AlphaEdit, with the curves.

For each method, ``factedit eval RECORDS --limit N --sequential --batch-size B --method M
--no-generation --answer-tokens 0 --json OUT/M.json`` (the same library call; the curves
are teacher-forced, and greedy answers for all N edits on the final model would cost more
than the edits on this CPU): after every batch the stream
curve records efficacy / paraphrase / neighbourhood over all edits so far (a fixed random
sample of ``--sample`` once there are more), the fluency probe's generation entropy and the
norms of the edited matrices; at the end every edit is measured on the final model. Then
both reports are drawn into OUT/curves.png and .svg, and a summary JSON is printed.

    python scripts/bench_sequential.py --facts 1000 --batch-size 100 --no-edit-records \
        --out docs/results/seq

Each fact's z is cached on disk under the identity of the model it was optimised on (the
deltas applied so far), so a rerun replays the earlier batches' z from the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from factedit.evaluate.job import EvalJob, plan_eval, run_eval
from factedit.evaluate.plot import plot_stream
from factedit.report import write_json
from json_out import add_hparams_option, emit

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--methods", default="memit,alphaedit")
    parser.add_argument("--records", type=Path, default=DATA / "counterfact-mass.json")
    parser.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--out", type=Path, required=True)
    add_hparams_option(parser, "for every method, over the preset's")
    parser.add_argument(
        "--no-edit-records",
        action="store_true",
        help="leave each report's per-edit records (`edits`, ~3.7 MB a method at 1,000) out of "
        "OUT/METHOD.json; metrics, stream curves and updates stay (the committed copies)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a method's report from OUT/METHOD.json where one is there (a run that "
        "stopped after its first method resumes with the second)",
    )
    return parser.parse_args(argv)


def run_method(args: argparse.Namespace, method: str) -> dict:
    done = args.out / f"{method}.json"
    if args.reuse and done.is_file():
        return keep_records(json.loads(done.read_text()), args, done)
    job = EvalJob(
        source=args.records,
        method=method,
        limit=args.facts,
        model=args.model,
        device="cpu",
        independent=False,
        corpus=[str(args.corpus)],
        generation=False,
        answer_tokens=0,
        allow_large_updates=True,
        batch_size=args.batch_size,
        stream_sample=args.sample,
    )
    plan = plan_eval(job)
    plan.spec = dataclasses.replace(plan.spec, hparams={**plan.spec.hparams, **args.hparams})
    return keep_records(run_eval(plan).report, args, done)


def keep_records(report: dict, args: argparse.Namespace, done: Path) -> dict:
    """Write ``report`` to ``done``, less its per-edit records under ``--no-edit-records``
    (a reused report too)."""
    if args.no_edit_records:
        report.pop("edits", None)
    write_json(done, report)
    return report


#: Per batch and layer, what each update did (from the report's ``updates``).
UPDATE_FIELDS = ("layer", "earlier_edits", "null_dim", "share_reached_mean", "relative_norm")


def summary(report: dict) -> dict:
    points = report["stream"]["points"]
    return {
        "method": report["settings"]["method"],
        "hparams": report["settings"]["hparams"],
        "final_all_edits": report["metrics"]["edited"],
        "unedited": report["metrics"]["unedited"],
        "entropy_before": points[0]["entropy"],
        "entropy_after": points[-1]["entropy"],
        "heldout_perplexity": report.get("heldout_perplexity"),
        "curve_perplexity": [p.get("perplexity") for p in points],
        "curve_efficacy": [p["efficacy"] for p in points],
        "updates": [{k: u.get(k) for k in UPDATE_FIELDS} for u in report.get("updates", [])],
        "seconds": report["timing"]["total_s"],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reports = [run_method(args, m) for m in args.methods.split(",")]
    pictures = plot_stream(reports, args.out / "curves")
    result = {
        "benchmark": "sequential",
        "model": args.model,
        "facts": args.facts,
        "batch_size": args.batch_size,
        "methods": [summary(r) for r in reports],
        "pictures": [str(p) for p in pictures],
    }
    return emit(result, args.out / "summary.json")


if __name__ == "__main__":
    main()
