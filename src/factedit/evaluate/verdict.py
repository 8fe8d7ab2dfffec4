"""One verdict per edit, for a person reading ``edit apply``: did it take, did it leak?

    v = edit_verdict(before, after)        # two RequestMeasurement of the same request
    v.line()   -> "rewrite 1/1, paraphrases 2/2, neighbours kept 9/10"
    v.changed  -> neighbour prompts the edit turned to target_new

The comparisons are the CounterFact ones (Meng et al. 2022, §4.2): a rewrite or paraphrase
prompt passes when target_new scores a lower mean token NLL than target_true (with no
target_true known: when every target_new token is the top-1 prediction); a neighbour is kept
when its expected answer (its own ``answer``, else target_true) still beats target_new. A
neighbour *changed* when it was kept before the edit and is not after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from factedit.evaluate.counterfact import ranks_above
from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement


@dataclass(frozen=True)
class ChangedNeighbour:
    """A neighbourhood prompt whose preferred answer moved from ``answer`` to ``now``."""

    prompt: str
    answer: str
    now: str


@dataclass(frozen=True)
class Verdict:
    """Counts (passed, of) per group and the neighbours the edit changed."""

    rewrite: tuple[int, int]
    paraphrases: tuple[int, int]
    neighbours_kept: tuple[int, int]
    changed: tuple[ChangedNeighbour, ...]

    def line(self) -> str:
        parts = [f"rewrite {self.rewrite[0]}/{self.rewrite[1]}"]
        if self.paraphrases[1]:
            parts.append(f"paraphrases {self.paraphrases[0]}/{self.paraphrases[1]}")
        if self.neighbours_kept[1]:
            parts.append(f"neighbours kept {self.neighbours_kept[0]}/{self.neighbours_kept[1]}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rewrite": list(self.rewrite),
            "paraphrases": list(self.paraphrases),
            "neighbours_kept": list(self.neighbours_kept),
            "changed_neighbours": [vars(c) for c in self.changed],
        }


def _rewritten(p: PromptMeasurement) -> bool:
    if p.true is None:
        return p.new.accuracy == 1.0
    return ranks_above(p.new.nll, p.true.nll)


def _kept(p: PromptMeasurement) -> bool:
    expected = p.expected
    return expected is not None and ranks_above(expected.nll, p.new.nll)


def _count(prompts: tuple[PromptMeasurement, ...], passed) -> tuple[int, int]:
    return sum(1 for p in prompts if passed(p)), len(prompts)


def edit_verdict(before: RequestMeasurement, after: RequestMeasurement) -> Verdict:
    """The verdict of one edit from its measurements before and after (same prompts)."""
    neighbours = tuple(p for p in after.group("neighborhood") if p.expected is not None)
    changed = tuple(
        ChangedNeighbour(a.prompt, a.answer_text or before.target_true or "?", after.target_new)
        for b, a in zip(before.group("neighborhood"), after.group("neighborhood"), strict=True)
        if _kept(b) and not _kept(a)
    )
    return Verdict(
        rewrite=_count(after.group("rewrite"), _rewritten),
        paraphrases=_count(after.group("paraphrase"), _rewritten),
        neighbours_kept=_count(neighbours, _kept),
        changed=changed,
    )
