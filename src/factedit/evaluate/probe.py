"""A quick fluency probe: does the edited model still write varied text?

    before = probe_entropy(lm)              # on the unedited model
    ... apply the edits ...
    probe = FluencyProbe(before, probe_entropy(lm))
    report_probe(probe)                     # warns on stderr when the model has collapsed

The probe greedily continues :data:`PROBE_PROMPTS` (generic, unrelated to any fact) by
:data:`PROBE_TOKENS` tokens in one batch and scores the continuations with the evaluator's
generation entropy (GE, :func:`factedit.evaluate.fluency.generation_entropy`: the entropy of
word bigrams and trigrams, x 100). It costs :data:`PROBE_TOKENS` batched decoding steps (3
rows) per model state, cheap enough to run after every ``factedit edit apply``.

Greedy, not sampled: a collapsed model puts (nearly) the same distribution at every position,
and top-k sampling from that fixed set still produces varied bigrams (on the tiny random test
models, a collapse that makes greedy text one repeated token keeps most of the sampled GE),
while its greedy text repeats one token or a short loop, whose GE is near 0. Greedy is
deterministic too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from factedit.console import info, warn
from factedit.evaluate.fluency import generation_entropy
from factedit.evaluate.generation import generate_text
from factedit.models.loading import LoadedModel

#: Fixed, fact-free prompts: an edit that only rewrites its fact leaves these continuations
#: (nearly) unchanged.
PROBE_PROMPTS: tuple[str, ...] = (
    "The weather today is",
    "My favourite way to spend a weekend is",
    "Here is a simple recipe for dinner:",
)
#: New tokens per prompt (about 25 words: enough for a repetition loop to show).
PROBE_TOKENS = 32
#: The edited model has collapsed when its probe GE falls below this fraction of the unedited
#: model's. Why 0.75: for n words the GE of a continuation is close to log2(n) x 100 when its
#: n-grams are all distinct (~460 for 25 words) and log2(p) x 100 when it loops with period p
#: words. 0.75 x log2(25) = log2(11): the edited text has fewer distinct n-grams than a loop
#: of 11 words, i.e. more than half of it repeats. Edits that keep the model fluent move GE by
#: a few percent at most (ROME on CounterFact: GPT-2 XL about 627 -> 622 in the ROME paper;
#: gemma-3-270m here: -0.2 %, see the README), while a collapsed model repeating one token
#: scores 0.
COLLAPSE_RATIO = 0.75


@dataclass(frozen=True)
class FluencyProbe:
    """Probe GE of the model before and after the edits (see :data:`COLLAPSE_RATIO`)."""

    before: float
    after: float

    @property
    def collapsed(self) -> bool:
        return self.after < COLLAPSE_RATIO * self.before

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "collapsed": self.collapsed}


def probe_texts(lm: LoadedModel) -> list[str]:
    """Greedy continuations of :data:`PROBE_PROMPTS`, one batch."""
    return generate_text(lm, PROBE_PROMPTS, max_new_tokens=PROBE_TOKENS, greedy=True)


def probe_entropy(lm: LoadedModel) -> float:
    """GE (x 100) of :func:`probe_texts` on the model as it is now."""
    return generation_entropy(probe_texts(lm))


def report_probe(probe: FluencyProbe) -> None:
    """Warn on stderr when the edited model has collapsed; otherwise one line of info."""
    numbers = f"generation entropy {probe.before:.0f} before the edits, {probe.after:.0f} after"
    if probe.collapsed:
        warn(
            f"the edited model looks collapsed: {numbers} (below {COLLAPSE_RATIO:.0%} of the "
            "unedited model's); it may repeat itself on any prompt, check its generations"
        )
    else:
        info(f"fluency probe: {numbers}")
