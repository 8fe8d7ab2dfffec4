"""Measure one edit request on the current model: every prompt x target score, and samples.

``measure_request(lm, request)`` scores, in a few batched passes (each prompt run once, see
:mod:`factedit.evaluate.scoring`), target_new and target_true after the rewrite prompt, each
paraphrase and each neighborhood prompt, plus the expected answer of each neighborhood prompt
when the request names explicit answers (zsRE ``loc_ans``, YAML ``answer``). With
``generation=True`` it also samples one text per generation prompt (top-k, seeded) for GE and
the mention counts; with ``answer_tokens`` > 0 it continues every scored prompt greedily
(the generation-based protocol of :mod:`factedit.evaluate.greedy`).
``measure_requests(lm, requests)`` does the same (without samples) for many requests on one
model state, their prompts pooled. Metrics are computed from the result by
:func:`factedit.evaluate.metrics.request_metrics`.

Probabilities reported per prompt and target: ``nll`` (mean token NLL, the CounterFact score
of Meng et al. 2022, §4.2, that metrics compare), ``prob = exp(-nll)`` (the per-token
geometric-mean probability, which ROME's magnitudes EM/PM/NM average), ``logprob``
(log-probability of the whole target string), the per-token log-probabilities and the
teacher-forced top-1 ``accuracy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from factedit.evaluate.fluency import mentions, text_entropy
from factedit.evaluate.generation import generate_ids
from factedit.evaluate.scoring import TokenScores, score_continuations
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.tokens import prompt_token_ids, target_token_ids, visible_text

GROUPS: tuple[str, ...] = ("rewrite", "paraphrase", "neighborhood")
#: Total length (prompt + generated tokens) of each sample, as the ROME reference's
#: ``generate_fast(max_out_len=100)``.
GEN_LENGTH = 100
GEN_TOP_K = 5
#: Rows per greedy decoding batch when prompts are pooled (:func:`measure_requests`): past
#: about 64 rows the step is compute-bound on a CPU and more rows gain nothing.
GREEDY_ROWS = 64


@dataclass(frozen=True)
class PromptMeasurement:
    """Scores of the targets after one prompt. ``answer``: the neighborhood answer, if any."""

    group: str
    prompt: str
    new: TokenScores
    true: TokenScores | None = None
    answer: TokenScores | None = None
    answer_text: str | None = None
    #: the greedy continuation of the prompt (the generation-based protocol), if generated
    continuation: str | None = None

    @property
    def expected(self) -> TokenScores | None:
        """What a neighborhood prompt should still predict: its answer, else target_true."""
        return self.answer if self.answer is not None else self.true

    def to_dict(self) -> dict[str, Any]:
        targets = {"new": _scores_dict(self.new)}
        if self.true is not None:
            targets["true"] = _scores_dict(self.true)
        if self.answer is not None:
            targets["answer"] = {"text": self.answer_text, **_scores_dict(self.answer)}
        out = {"group": self.group, "prompt": self.prompt, "targets": targets}
        if self.continuation is not None:
            out["continuation"] = self.continuation
        return out


def _scores_dict(s: TokenScores) -> dict[str, Any]:
    return {
        "nll": s.nll,
        "prob": s.prob,
        "logprob": s.logprob,
        "tokens": s.n_tokens,
        "accuracy": s.accuracy,
        "token_logprobs": list(s.logprobs),
    }


@dataclass(frozen=True)
class Generation:
    """One sample: ``text`` is the continuation only; ``entropy`` is of the decoded prompt
    plus continuation (as the reference scores the whole generated sequence)."""

    prompt: str
    text: str
    n_tokens: int
    entropy: float
    mentions_new: bool
    mentions_true: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "tokens": self.n_tokens,
            "ge": 100.0 * self.entropy,
            "mentions_new": self.mentions_new,
            "mentions_true": self.mentions_true,
        }


@dataclass(frozen=True)
class RequestMeasurement:
    """Everything measured for one request on one model state (unedited or edited)."""

    target_new: str
    target_true: str | None
    prompts: tuple[PromptMeasurement, ...]
    generations: tuple[Generation, ...] = ()

    def group(self, name: str) -> tuple[PromptMeasurement, ...]:
        """The prompts of one group: ``rewrite``, ``paraphrase`` or ``neighborhood``."""
        if name not in GROUPS:
            raise KeyError(f"unknown prompt group {name!r}; one of {', '.join(GROUPS)}")
        return tuple(p for p in self.prompts if p.group == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_new": self.target_new,
            "target_true": self.target_true,
            "prompts": [p.to_dict() for p in self.prompts],
            "generations": [g.to_dict() for g in self.generations],
        }


def _prompt_groups(request: EditRequest) -> list[tuple[str, str, str | None]]:
    """(group, prompt, neighborhood answer or None) for every scored prompt."""
    rows: list[tuple[str, str, str | None]] = [("rewrite", request.rewrite_prompt, None)]
    rows += [("paraphrase", p, None) for p in request.paraphrases]
    answers = request.neighborhood_answers
    for i, prompt in enumerate(request.neighborhood):
        rows.append(("neighborhood", prompt, answers[i] if i < len(answers) else None))
    return rows


def measure_request(
    lm: LoadedModel,
    request: EditRequest,
    *,
    generation: bool = False,
    seed: int = 0,
    gen_length: int = GEN_LENGTH,
    top_k: int = GEN_TOP_K,
    batch_size: int | None = None,
    answer_tokens: int = 0,
) -> RequestMeasurement:
    """Score every prompt x target of ``request`` (batched); optionally sample texts, and
    with ``answer_tokens`` > 0 continue every scored prompt greedily for that many tokens
    (the generation-based protocol, :mod:`factedit.evaluate.greedy`).

    ``batch_size`` caps the prompts per forward pass, for scoring and generation alike
    (default: as many as pay off; 1 gives the per-prompt loop used as a baseline).
    """
    scored = measure_requests(lm, [request], batch_size=batch_size, answer_tokens=answer_tokens)
    if not generation:
        return scored[0]
    (measured,) = with_samples(
        lm, [request], scored, [seed], gen_length=gen_length, top_k=top_k, batch_size=batch_size
    )
    return measured


def with_samples(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    measured: Sequence[RequestMeasurement],
    seeds: Sequence[int],
    *,
    gen_length: int = GEN_LENGTH,
    top_k: int = GEN_TOP_K,
    batch_size: int | None = None,
) -> list[RequestMeasurement]:
    """``measured[j]`` (of ``requests[j]``) with its top-k samples, drawn with ``seeds[j]``
    (:func:`sample_generations`)."""
    return [
        replace(
            m,
            generations=sample_generations(
                lm, r, seed=seed, gen_length=gen_length, top_k=top_k, batch_size=batch_size
            ),
        )
        for r, m, seed in zip(requests, measured, seeds, strict=True)
    ]


def measure_requests(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    *,
    batch_size: int | None = None,
    answer_tokens: int = 0,
) -> list[RequestMeasurement]:
    """:func:`measure_request` without samples for many requests on one model state, their
    prompts pooled: scored together (:func:`score_continuations` buckets them) and continued
    greedily :data:`GREEDY_ROWS` rows at a time, so that the LM head's weight [V, d], read
    once per decoding step, serves many rows (on gemma-3-270m, V = 262,144: 0.8 prompts/s
    for one edit's 3 prompts against 7 for 64 pooled). The scores are those of one call
    per request, up to the float rounding of a different batch layout.
    """
    tok = lm.tokenizer
    rows = [_prompt_groups(r) for r in requests]
    items: list[tuple[list[int], list[int]]] = []
    keys: list[tuple[int, int, str]] = []
    for n, (request, request_rows) in enumerate(zip(requests, rows, strict=True)):
        targets = {"new": target_token_ids(tok, request.target_new)}
        if request.target_true is not None:
            targets["true"] = target_token_ids(tok, request.target_true)
        for index, (_, prompt, answer) in enumerate(request_rows):
            ids = prompt_token_ids(tok, prompt)
            for name, target_ids in targets.items():
                items.append((ids, target_ids))
                keys.append((n, index, name))
            if answer is not None:
                items.append((ids, target_token_ids(tok, answer)))
                keys.append((n, index, "answer"))
    scores = score_continuations(lm, items, batch_size=batch_size)
    found: dict[tuple[int, int, str], TokenScores] = dict(zip(keys, scores, strict=True))
    pooled = [prompt for request_rows in rows for _, prompt, _ in request_rows]
    said = iter(greedy_continuations(lm, pooled, answer_tokens, batch_size or GREEDY_ROWS))
    out = []
    for n, (request, request_rows) in enumerate(zip(requests, rows, strict=True)):
        prompts = tuple(
            PromptMeasurement(
                group=group,
                prompt=prompt,
                new=found[(n, i, "new")],
                true=found.get((n, i, "true")),
                answer=found.get((n, i, "answer")),
                answer_text=answer,
                continuation=next(said),
            )
            for i, (group, prompt, answer) in enumerate(request_rows)
        )
        out.append(RequestMeasurement(request.target_new, request.target_true, prompts))
    return out


def greedy_continuations(
    lm: LoadedModel, prompts: Sequence[str], n_tokens: int, batch_size: int | None
) -> list[str | None]:
    """The greedy continuation of each prompt (``n_tokens`` at most, stopping at EOS), in
    batches of ``batch_size`` rows (None: all at once); Nones when ``n_tokens`` is 0."""
    if n_tokens <= 0:
        return [None] * len(prompts)
    ids = [prompt_token_ids(lm.tokenizer, p) for p in prompts]
    rows = batch_size or len(ids)
    new: list[list[int]] = []
    for start in range(0, len(ids), rows):
        new += generate_ids(lm, ids[start : start + rows], max_new_tokens=n_tokens, greedy=True)
    return [visible_text(lm.tokenizer, n) for n in new]


def sample_generations(
    lm: LoadedModel,
    request: EditRequest,
    *,
    seed: int = 0,
    gen_length: int = GEN_LENGTH,
    top_k: int = GEN_TOP_K,
    batch_size: int | None = None,
) -> tuple[Generation, ...]:
    """One top-k sample per generation prompt, each ``gen_length`` tokens long in total.

    As in the reference, sampling does not stop at EOS, and the entropy is taken over the
    prompt plus its continuation. All prompts are sampled in one batch unless ``batch_size``
    caps the rows (samples depend on the seed and on that batch layout).
    """
    prompts: Sequence[str] = request.generation_prompts
    if not prompts:
        return ()
    tok = lm.tokenizer
    ids = [prompt_token_ids(tok, p) for p in prompts]
    rows = batch_size or len(ids)
    new: list[list[int]] = []
    for start in range(0, len(ids), rows):
        chunk = ids[start : start + rows]
        new += generate_ids(
            lm,
            chunk,
            max_new_tokens=max(1, gen_length - min(len(i) for i in chunk)),
            greedy=False,
            seed=seed + start,
            top_k=top_k,
            stop_at_eos=False,
        )
    out = []
    for prompt, prompt_ids, new_ids in zip(prompts, ids, new, strict=True):
        keep = new_ids[: max(1, gen_length - len(prompt_ids))]
        text = visible_text(tok, keep)
        full = visible_text(tok, list(prompt_ids) + list(keep))
        out.append(
            Generation(
                prompt=prompt,
                text=text,
                n_tokens=len(keep),
                entropy=text_entropy(full),
                mentions_new=mentions(text, request.target_new),
                mentions_true=(
                    None if request.target_true is None else mentions(text, request.target_true)
                ),
            )
        )
    return tuple(out)
