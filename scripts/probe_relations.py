"""Probe several CounterFact relations on one model: where does the subject's attribute
become linearly decodable, and how does that compare with the causal-tracing plateau?

For every relation of ``--facts`` with at least ``--min-labels`` labels of at least
``--min-count`` subjects each (after dropping the rarer labels; the flattened CounterFact
file has no relation ids, so a relation is a prompt template there), up to ``--relations``
of them, the largest first (or the ``--relation`` ones named): ``factedit probe`` on the
residual stream at the subject's last token, with the logit lens. Writes under ``--out``:

    <relation-slug>.json   the full factedit.probe/1 report of that relation
    curves.png / .svg      one panel per relation: accuracy, control task, majority baseline
    summary.json           per relation: decodable_from, expected layer, peak layer, ...

``summary.json`` also carries the causal-tracing MLP plateau of the same model when
``docs/results/layer-profile-<model>.json`` exists (the rule of
:func:`factedit.trace.window.plateau_window`, the same 75 % as ``decodable_from``).

    OMP_NUM_THREADS=1 python scripts/probe_relations.py --model gemma-3-270m

Data: ``$FACTEDIT_DATA`` (default ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from factedit.figures import write_figure
from factedit.models import load_model
from factedit.paths import atomic_write_text
from factedit.probing.plot import relations_figure
from factedit.probing.run import ProbeJob, run_probe
from factedit.probing.tasks import read_facts, relations, slug
from factedit.trace.window import plateau_window

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACTEDIT_DATA", REPO.parent / "shared" / "data"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--facts", type=Path, default=DATA / "counterfact-mass.json")
    p.add_argument("--relation", action="append", default=[], help="probe this one (repeatable)")
    p.add_argument("--relations", type=int, default=5, help="how many relations at most")
    # The flattened CounterFact file has no template with four labels of 15 subjects each
    # (three at most); with 10 it has five.
    p.add_argument("--min-count", type=int, default=10, help="subjects a label needs to stay")
    p.add_argument("--min-labels", type=int, default=4, help="labels a relation needs")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "probing")
    return p.parse_args()


def choose(facts: list, args: argparse.Namespace) -> list[str]:
    """The relations to probe: those named, else the largest that qualify."""
    if args.relation:
        return list(args.relation)
    rows = [r for r in relations(facts, args.min_count) if r.kept_labels >= args.min_labels]
    return [r.name for r in rows[: args.relations]]


def trace_plateau(model: str) -> dict[str, Any] | None:
    """The causal-tracing MLP plateau recorded for ``model`` in docs/results, if any."""
    path = REPO / "docs" / "results" / f"layer-profile-{model}.json"
    if not path.is_file():
        return None
    curve = json.loads(path.read_text())["mlp_effect_last_subject_token"]
    return {"source": str(path.relative_to(REPO)), "plateau": list(plateau_window(curve))}


def summary_row(name: str, data: dict[str, Any]) -> dict[str, Any]:
    lens = [row["lens"]["top1"] for row in data["layers"]]
    return {
        "relation": name,
        "slug": slug(name),
        "examples": data["task"]["examples"],
        "labels": data["task"]["labels"],
        "majority_baseline": data["majority_baseline"],
        "peak_layer": data["peak_layer"],
        "peak_accuracy": data["peak_accuracy"],
        "peak_selectivity": max(row["selectivity"] for row in data["layers"]),
        "decodable_from": data["decodable_from"],
        "plateau": data["plateau"],
        "expected_layer": data["scalar_mix"]["expected_layer"],
        "expected_layer_gain": data.get("expected_layer_gain"),
        "lens_top1_best_layer": int(max(range(len(lens)), key=lens.__getitem__)),
        "lens_top1_best": max(lens),
        "seconds": data["seconds"],
    }


def probe_all(lm, names: list[str], args: argparse.Namespace) -> list[tuple[str, dict]]:
    """Probe each relation on the loaded model; writes ``<slug>.json`` as each finishes."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            job = ProbeJob(
                facts=args.facts,
                relation=name,
                min_count=args.min_count,
                model=args.model,
                out=Path(tmp) / slug(name),
                seeds=args.seeds,
                lens=True,
            )
            data = run_probe(job, load=lambda *_a, **_k: lm).data
            atomic_write_text(args.out / f"{slug(name)}.json", json.dumps(data, indent=1) + "\n")
            results.append((name, data))
            row = summary_row(name, data)
            print(
                f"{name}: decodable from {row['decodable_from']}, peak {row['peak_layer']} "
                f"({row['peak_accuracy']:.3f}), E[l] {row['expected_layer']:.2f}, "
                f"{row['seconds']['total']:.0f} s",
                flush=True,
            )
    return results


def main() -> None:
    args = parse_args()
    kind, facts = read_facts(args.facts)
    names = choose(facts, args)
    if not names:
        raise SystemExit(
            f"no relation of {args.facts} has {args.min_labels} labels of {args.min_count} "
            "subjects; lower --min-count or --min-labels"
        )
    start = time.monotonic()
    lm = load_model(args.model, device=args.device)
    loaded = time.monotonic() - start
    results = probe_all(lm, names, args)
    titles = [
        f"{n} ({d['task']['examples']} subjects, {len(d['task']['labels'])} labels)"
        for n, d in results
    ]
    write_figure(relations_figure([d for _, d in results], titles), args.out / "curves")
    summary = {
        "model": args.model,
        "facts": str(args.facts.name),
        "format": kind,
        "selection": {"min_count": args.min_count, "min_labels": args.min_labels},
        "settings": results[0][1]["settings"],
        "trace": trace_plateau(args.model),
        "relations": [summary_row(n, d) for n, d in results],
        "seconds": {"load": round(loaded, 1), "total": round(time.monotonic() - start, 1)},
    }
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}/summary.json, curves.png/.svg and {len(results)} relation reports")


if __name__ == "__main__":
    main()
