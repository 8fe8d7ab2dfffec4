"""Average causal effects over many known facts (the ROME paper's average-effect figure).

    facts = load_known_facts("known-facts.json")     # ROME known_1000.json format
    agg = aggregate_trace(lm, facts, limit=50)    # only facts the model itself predicts
    agg.effects["mlp"]        # [6, L] mean indirect effect per token group and layer
    agg.recommended_layer()   # peak of the MLP effect at the last subject token

A fact is *known* when the model's greedy answer is the fact's whole ``attribute``: greedy
decoding from the prompt produces exactly the attribute's tokens (the reference's rule; an
earlier factedit compared only the first token). Token groups: first / middle / last subject
token, first subsequent token, further tokens, last token (a group a fact lacks — e.g. the
middle of a two-token subject — is left out of that group's average; ``counts`` says how
many facts each group averages).

A long run can be resumed: with ``checkpoint_dir`` each fact's trace is written there
(``fact-NNN.json``, atomically) as soon as it is done, and a later run with the same model,
facts and settings reads it back instead of tracing that fact again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factedit.errors import FactEditError, SpecError, SubjectNotFoundError
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_write_text
from factedit.tokens import SubjectPrompt, locate_subject, target_token_ids
from factedit.trace.fact import check_settings, trace_fact, trace_settings
from factedit.trace.noise import DEFAULT_NOISE, noise_std, parse_noise
from factedit.trace.patching import KINDS
from factedit.trace.result import TraceResult

GROUPS: tuple[str, ...] = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)
LAST_SUBJECT = GROUPS.index("last subject token")


@dataclass(frozen=True)
class KnownFact:
    """One record of a known-facts file (ROME ``known_1000.json`` format)."""

    subject: str
    prompt: str
    attribute: str
    known_id: int | None = None


def load_known_facts(path: str | Path) -> list[KnownFact]:
    """Read a known-facts JSON list; errors name the file, the record and the field."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: cannot read a known-facts JSON list ({exc})") from None
    if not isinstance(records, list):
        raise SpecError(f"{path}: expected a JSON list of facts")
    facts = []
    for i, rec in enumerate(records):
        for key in ("subject", "prompt", "attribute"):
            if not isinstance(rec, dict) or not isinstance(rec.get(key), str) or not rec[key]:
                raise SpecError(f"{path}: fact #{i} needs a non-empty string field {key!r}")
        facts.append(
            KnownFact(rec["subject"], rec["prompt"], rec["attribute"], rec.get("known_id"))
        )
    return facts


def token_groups(span: tuple[int, int], num_tokens: int) -> list[list[int]]:
    """Token indices of each of :data:`GROUPS` for a subject at ``span`` in ``num_tokens``."""
    a, b = span
    last = num_tokens - 1
    return [
        [a],
        list(range(a + 1, b - 1)),
        [b - 1],
        [b] if b <= last else [],
        list(range(b + 1, last)),
        [last],
    ]


KNOWN_RULE = "greedy answer == the whole attribute"


@torch.inference_mode()
def greedy_answers_with(lm: LoadedModel, prompt_ids: Sequence[int], answer: Sequence[int]) -> bool:
    """Does greedy decoding from ``prompt_ids`` produce exactly ``answer``'s tokens?

    One teacher-forced pass: greedy decoding yields ``answer`` iff, at every step, the argmax
    after the prompt and the answer's earlier tokens is the answer's next token.
    """
    ids = torch.tensor([list(prompt_ids) + list(answer[:-1])], device=lm.device)
    logits = lm.model(input_ids=ids, use_cache=False).logits[0, len(prompt_ids) - 1 :]
    return logits.argmax(dim=-1).tolist() == list(answer)


def select_known(
    lm: LoadedModel, facts: Sequence[KnownFact], limit: int | None
) -> tuple[list[tuple[KnownFact, SubjectPrompt]], int]:
    """The first ``limit`` facts the model knows (:data:`KNOWN_RULE`), and how many were
    scanned."""
    kept: list[tuple[KnownFact, SubjectPrompt]] = []
    scanned = 0
    for fact in facts:
        if limit is not None and len(kept) >= limit:
            break
        scanned += 1
        try:
            located = locate_subject(lm.tokenizer, fact.prompt, fact.subject)
        except SubjectNotFoundError:
            continue
        answer = target_token_ids(lm.tokenizer, fact.attribute)
        if greedy_answers_with(lm, located.input_ids, answer):
            kept.append((fact, located))
    return kept, scanned


@dataclass
class AggregateResult:
    """Mean indirect effects over known facts: ``effects[kind]`` is ``[len(GROUPS), L]``."""

    facts: list[TraceResult]
    scanned: int
    effects: dict[str, np.ndarray]
    counts: list[int]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def p_clean(self) -> float:
        return float(np.mean([f.p_clean for f in self.facts]))

    @property
    def p_corrupt(self) -> float:
        return float(np.mean([f.p_corrupt for f in self.facts]))

    def recommended_layer(self) -> tuple[int, float] | None:
        """(layer, mean indirect effect) of the MLP peak at the last subject token."""
        if "mlp" not in self.effects:
            return None
        curve = self.effects["mlp"][LAST_SUBJECT]
        layer = int(np.nanargmax(curve))
        return layer, float(curve[layer])

    def peaks(self) -> dict[str, dict[str, dict[str, float] | None]]:
        """Per kind and token group: the layer with the largest mean effect, and that effect."""
        out: dict[str, dict[str, dict[str, float] | None]] = {}
        for kind, eff in self.effects.items():
            out[kind] = {}
            for g, name in enumerate(GROUPS):
                row = eff[g]
                if np.isnan(row).all():
                    out[kind][name] = None
                    continue
                layer = int(np.nanargmax(row))
                out[kind][name] = {"layer": layer, "effect": float(row[layer])}
        return out

    def to_json(self) -> dict[str, Any]:
        rec = self.recommended_layer()
        return {
            "kind": "aggregate",
            "groups": list(GROUPS),
            "facts_scanned": self.scanned,
            "facts_kept": len(self.facts),
            "p_clean": self.p_clean,
            "p_corrupt": self.p_corrupt,
            "effects": {
                k: [[None if np.isnan(x) else float(x) for x in row] for row in v]
                for k, v in self.effects.items()
            },
            "counts": self.counts,
            "peaks": self.peaks(),
            "recommended_layer": None if rec is None else {"layer": rec[0], "effect": rec[1]},
            "settings": self.settings,
            "facts": [f.to_json() for f in self.facts],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AggregateResult:
        effects = {
            k: np.array([[np.nan if x is None else x for x in row] for row in v], dtype=np.float64)
            for k, v in data["effects"].items()
        }
        return cls(
            facts=[TraceResult.from_json(f) for f in data.get("facts", [])],
            scanned=int(data["facts_scanned"]),
            effects=effects,
            counts=list(data["counts"]),
            settings=dict(data.get("settings", {})),
        )


def average_effects(
    traces: Sequence[TraceResult], kinds: Sequence[str]
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Mean over facts of each group's mean indirect effect; NaN where no fact has the group."""
    num_layers = traces[0].grids[kinds[0]].shape[1]
    sums = {k: np.zeros((len(GROUPS), num_layers)) for k in kinds}
    counts = [0] * len(GROUPS)
    for tr in traces:
        groups = token_groups(tr.subject_span, len(tr.tokens))
        for g, tokens in enumerate(groups):
            if not tokens:
                continue
            counts[g] += 1
            for k in kinds:
                sums[k][g] += tr.indirect_effect(k)[tokens].mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        effects = {k: s / np.array(counts, dtype=np.float64)[:, None] for k, s in sums.items()}
    return effects, counts


def aggregate_trace(
    lm: LoadedModel,
    facts: Sequence[KnownFact],
    *,
    limit: int | None = None,
    kinds: Sequence[str] = KINDS,
    samples: int = 10,
    noise: str | float = DEFAULT_NOISE,
    window: int = 10,
    seed: int = 0,
    engine_name: str = "fast",
    on_fact: Callable[[int, int, TraceResult], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> AggregateResult:
    """Trace the known facts the model predicts (at most ``limit``) and average the effects.

    The noise std is measured once, over the subject tokens of all kept facts (as in the
    reference); fact ``i`` uses seed ``seed + i``. ``on_fact(i, n, result)`` reports progress.
    With ``checkpoint_dir``, finished facts are saved there and reused by a rerun with the
    same settings (``settings["resumed"]`` counts them).
    """
    kinds = tuple(kinds)
    check_settings(kinds, samples, window, engine_name)
    parse_noise(noise)
    kept, scanned = select_known(lm, facts, limit)
    if not kept:
        raise FactEditError(f"the model predicts none of the {scanned} facts scanned")
    subject_ids = [
        i for _, sp in kept for i in sp.input_ids[sp.subject_span[0] : sp.subject_span[1]]
    ]
    std = noise_std(lm, noise, subject_ids)
    traces = []
    resumed = 0
    for i, (fact, _) in enumerate(kept):
        path = None if checkpoint_dir is None else Path(checkpoint_dir) / f"fact-{i:03d}.json"
        result, from_checkpoint = trace_or_resume(
            lm,
            fact,
            path,
            kinds=kinds,
            samples=samples,
            std=std,
            window=window,
            seed=seed + i,
            engine_name=engine_name,
        )
        resumed += from_checkpoint
        traces.append(result)
        if on_fact is not None:
            on_fact(i, len(kept), result)
    effects, counts = average_effects(traces, kinds)
    settings = {
        **trace_settings(lm, kinds, samples, noise, std, window, seed, engine_name),
        "limit": limit,
        "known_rule": KNOWN_RULE,
        "resumed": resumed,
    }
    return AggregateResult(traces, scanned, effects, counts, settings)


def trace_or_resume(
    lm: LoadedModel,
    fact: KnownFact,
    path: Path | None,
    *,
    kinds: tuple[str, ...],
    samples: int,
    std: float,
    window: int,
    seed: int,
    engine_name: str,
) -> tuple[TraceResult, bool]:
    """One kept fact of :func:`aggregate_trace`, traced with the absolute noise ``std``.

    Returns (trace, True) when ``path`` holds this fact traced with these settings
    (:func:`read_checkpoint`); otherwise traces it, saves it at ``path`` (atomically) when a
    path is given, and returns (trace, False).
    """
    expected = trace_settings(lm, kinds, samples, std, std, window, seed, engine_name)
    result = None if path is None else read_checkpoint(path, fact, expected)
    if result is not None:
        return result, True
    result = trace_fact(
        lm,
        fact.prompt,
        fact.subject,
        kinds=kinds,
        samples=samples,
        noise=std,
        window=window,
        seed=seed,
        engine_name=engine_name,
    )
    if path is not None:
        atomic_write_text(path, json.dumps(result.to_json()))
    return result, False


def read_checkpoint(path: Path, fact: KnownFact, expected: dict[str, Any]) -> TraceResult | None:
    """The trace saved at ``path`` if it is ``fact`` traced with ``expected`` settings, else None.

    A missing, unreadable or mismatching file (another model, seed, noise, kinds, ...) is not
    an error: that fact is traced again and the file replaced.
    """
    try:
        result = TraceResult.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same_fact = (result.prompt, result.subject) == (fact.prompt, fact.subject)
    same_settings = all(result.settings.get(k) == v for k, v in expected.items())
    return result if same_fact and same_settings else None
