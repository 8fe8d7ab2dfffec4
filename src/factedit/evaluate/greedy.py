"""The generation-based protocol: does the model *say* the answer when it has to generate it?

Teacher-forced scores ask whether the model prefers target_new when it is handed the answer;
"The Mirage of Model Editing" (2025) shows that success rates drop sharply once the edited
model must produce the answer itself. Here each rewrite, paraphrase and neighbourhood prompt is
continued greedily for :data:`ANSWER_TOKENS` tokens (one batch per edit, KV cache) and

- ``gen_es`` / ``gen_ps``: % of rewrite / paraphrase continuations that state target_new;
- ``gen_ns``: % of neighbourhood continuations that still state their expected answer (the
  explicit answer when the record gives one, else target_true).

"States" (:func:`states_answer`) is a normalised match at the start of the continuation:
both texts are NFKC-normalised, case-folded and their whitespace runs collapsed to one space;
the continuation's leading spaces and opening quotes or brackets are dropped; it then must
begin with the answer, and the character after the answer must not be a letter or a digit
(so "Rome" is stated by " Rome, Italy" and "rome." but not by " Romeo"). All values x 100.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from factedit.evaluate.measure import PromptMeasurement, RequestMeasurement

#: Tokens of greedy continuation per prompt (enough for a multi-token answer and a little of
#: what follows it; the match is at the start).
ANSWER_TOKENS = 12
#: Dropped from the start of a continuation before matching.
_OPENERS = " \"'“‘«([{"
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, ends stripped."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def states_answer(continuation: str, answer: str) -> bool:
    """Whether ``continuation`` begins by stating ``answer`` (see the module docstring)."""
    want = normalise(answer)
    if not want:
        return False
    said = normalise(continuation).lstrip(_OPENERS)
    if not said.startswith(want):
        return False
    rest = said[len(want) :]
    return not rest or not rest[0].isalnum()


def _share(hits: Sequence[bool]) -> float | None:
    return 100.0 * sum(hits) / len(hits) if hits else None


def greedy_metrics(m: RequestMeasurement) -> dict[str, float]:
    """``gen_es``, ``gen_ps`` and ``gen_ns`` (x 100) where continuations were generated."""

    def said(prompts: Sequence[PromptMeasurement], answer_of) -> list[bool]:
        return [
            states_answer(p.continuation, answer)
            for p in prompts
            if p.continuation is not None and (answer := answer_of(p)) is not None
        ]

    values = {
        "gen_es": _share(said(m.group("rewrite"), lambda _: m.target_new)),
        "gen_ps": _share(said(m.group("paraphrase"), lambda _: m.target_new)),
        "gen_ns": _share(said(m.group("neighborhood"), lambda p: p.answer_text or m.target_true)),
    }
    return {k: v for k, v in values.items() if v is not None}
