"""Where protocols (a) and (c) disagree in a `factedit eval --json` report: per prompt group,
how many edited prompts rank target_new above target_true (a: the metric's own comparison,
``factedit.evaluate.counterfact.ranks_above``) and how many state it (c).

    python scripts/protocol_gap.py docs/results/protocols/counterfact-dev-200-gemma-3-270m.json

Prints JSON: counts of (a, c) outcomes per group (rewrite, paraphrase) and a few examples of
prompts that pass (a) and fail (c).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from factedit.evaluate.counterfact import ranks_above
from factedit.evaluate.greedy import states_answer
from json_out import emit

GROUPS = ("rewrite", "paraphrase")


def mean_nll(target: dict) -> float:
    """A target's mean token NLL from its JSON (stripped reports keep logprob and tokens)."""
    return -target["logprob"] / target["tokens"]


def gap(report: dict, examples: int = 5) -> dict:
    """(a)/(c) outcome counts per group over the edited measurements, and examples.

    ``report``: ``{"edits": [{"measurements": {"edited": RequestMeasurement.to_dict()}}]}``,
    as `factedit eval --json` writes it."""
    return measurement_gap((e["measurements"]["edited"] for e in report["edits"]), examples)


def measurement_gap(measurements: Iterable[dict], examples: int = 5) -> dict:
    """:func:`gap` over ``RequestMeasurement.to_dict()`` of the edited model, one per edit."""
    counts: dict[str, Counter] = {group: Counter() for group in GROUPS}
    found: list[dict] = []
    for edited in measurements:
        for prompt in edited["prompts"]:
            if prompt["group"] not in GROUPS:
                continue
            new, true = prompt["targets"]["new"], prompt["targets"]["true"]
            passes_a = ranks_above(mean_nll(new), mean_nll(true))
            passes_c = states_answer(prompt["continuation"], edited["target_new"])
            counts[prompt["group"]][f"a={int(passes_a)} c={int(passes_c)}"] += 1
            if passes_a and not passes_c and len(found) < examples:
                found.append(
                    {
                        "target_new": edited["target_new"],
                        "prompt": prompt["prompt"],
                        "continuation": prompt["continuation"],
                    }
                )
    return {"counts": {g: dict(c) for g, c in counts.items()}, "a_not_c_examples": found}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args(argv)
    return emit(gap(json.loads(args.report.read_text()), args.examples), None)


if __name__ == "__main__":
    main()
