"""Finished outcomes of an independent ``factedit eval`` run, kept so that a rerun resumes.

    journal = EvalJournal.for_run(lm, session, options, kind)
    journal.get(index, request)     # the EditOutcome an earlier run measured, or None
    journal.put(outcome)            # one file, written atomically as soon as it is measured

The run key is a sha256 over the JSON of everything that determines the numbers
(:func:`run_settings`): :data:`FORMAT_VERSION`, a digest of factedit's own source (any code
change starts a new journal), the model's identity, dtype and device type, the source kind,
the method, its layers and resolved hyper-parameters, the corpus of its statistics (with the
contents of named corpus files), the seed, whether large updates are allowed, and the
evaluation options (with a digest of the held-out token ids). Entries live in
``$FACTEDIT_HOME/eval/<run key>/``, one pickled :class:`EditOutcome` per file, beside
``settings.json`` (the key, readable). An entry is named by a digest of the request's fields
and, only when texts are sampled (``options.generation``), of the sampling seed
``options.seed + index``: without sampling nothing measured depends on the index, so
``--offset`` / ``--limit`` slices of one file share entries. A file that does not load
(truncated, written by another version of the class) or holds another request counts as
missing; one that cannot be written is warned about once, and the run goes on unjournaled.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import factedit
from factedit.console import warn
from factedit.errors import OutputWriteError, StatsError
from factedit.evaluate.runner import EditOutcome, EvalOptions
from factedit.paths import atomic_file, atomic_write_text, cache_dir
from factedit.spec import EditRequest
from factedit.stats.choice import choose_corpus
from factedit.stats.corpus import corpus_digest

if TYPE_CHECKING:
    from factedit.methods.state import MethodState
    from factedit.models.loading import LoadedModel
    from factedit.session import EditSession

#: Part of every run key: bump it when what an entry holds changes meaning.
FORMAT_VERSION = 1
SETTINGS_FILE = "settings.json"
_SUFFIX = ".pkl"


@functools.cache
def source_digest() -> str:
    """sha256 over every ``*.py`` of the installed factedit package (relative path and bytes,
    sorted by relative path); computed once per process."""
    root = Path(factedit.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def corpus_settings(state: MethodState) -> dict[str, Any]:
    """The statistics corpus as the session records it (``state.corpus``, ``state.n_tokens``)
    and as it resolves now (kind, paths, and the contents of named files)."""
    named = None if state.corpus is None else [str(p) for p in state.corpus]
    out: dict[str, Any] = {"named": named, "n_tokens": state.n_tokens}
    try:
        choice = choose_corpus(state.corpus, n_tokens=state.n_tokens)
    except StatsError:  # a named file is missing: the statistics will say so
        return out
    files = list(choice.paths) if choice.kind == "files" else []
    out["kind"] = choice.kind
    out["paths"] = [str(p) for p in choice.paths]
    out["contents"] = corpus_digest(files) if files else None
    return out


def _tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def run_settings(
    lm: LoadedModel, session: EditSession, options: EvalOptions, kind: str
) -> dict[str, Any]:
    """Everything that determines an independent run's numbers (the run key's JSON)."""
    param = next(lm.model.parameters())
    heldout = options.heldout
    return {
        "version": FORMAT_VERSION,
        "factedit_source": source_digest(),
        "model": lm.identity,
        "dtype": str(param.dtype).removeprefix("torch."),
        "device": lm.device.type,
        "kind": kind,
        "method": session.method,
        "layers": list(session.layers),
        "hparams": session.hparams.to_dict(),
        "corpus": corpus_settings(session.state),
        "seed": session.seed,
        "allow_large_updates": bool(session.allow_large_updates),
        "options": options.to_dict(),
        "heldout_ids": None if heldout is None else _tensor_digest(heldout.ids),
    }


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class EvalJournal:
    """One run key's outcomes on disk (see the module docstring).

    ``reuse`` False: :meth:`get` finds nothing (every edit is measured again) while
    :meth:`put` still keeps what is measured, replacing earlier entries.
    """

    def __init__(
        self, settings: dict[str, Any], *, sampled: bool, seed: int, reuse: bool = True
    ) -> None:
        self.settings = settings
        self.key = _digest(settings)
        self.directory = cache_dir("eval", self.key[:32])
        self.sampled, self.seed, self.reuse = sampled, seed, reuse
        self._writable = True

    @classmethod
    def for_run(
        cls,
        lm: LoadedModel,
        session: EditSession,
        options: EvalOptions,
        kind: str,
        *,
        reuse: bool = True,
    ) -> EvalJournal:
        """The journal of an independent run of ``session`` on ``lm`` (unedited) with
        ``options`` over a source of ``kind``."""
        settings = run_settings(lm, session, options, kind)
        return cls(settings, sampled=options.generation, seed=options.seed, reuse=reuse)

    def path(self, index: int, request: EditRequest) -> Path:
        """The entry file of ``request`` measured as edit ``index`` of this run."""
        key: dict[str, Any] = {"request": dataclasses.asdict(request)}
        if self.sampled:
            key["sampling_seed"] = self.seed + index
        return self.directory / f"{_digest(key)[:32]}{_SUFFIX}"

    def get(self, index: int, request: EditRequest) -> EditOutcome | None:
        """The outcome kept for ``request`` (its ``index`` set to ``index``), or None."""
        if not self.reuse:
            return None
        try:
            with open(self.path(index, request), "rb") as fh:
                outcome = pickle.load(fh)
        except Exception:  # absent, truncated, stale class: measure it again
            return None
        if not isinstance(outcome, EditOutcome) or outcome.request != request:
            return None
        return dataclasses.replace(outcome, index=index)

    def put(self, outcome: EditOutcome) -> None:
        """Keep ``outcome`` (atomically: a file is there whole or not at all)."""
        if not self._writable:
            return
        try:
            if not (self.directory / SETTINGS_FILE).is_file():
                text = json.dumps({"key": self.key, **self.settings}, indent=2, default=str)
                atomic_write_text(self.directory / SETTINGS_FILE, text + "\n")
            with atomic_file(self.path(outcome.index, outcome.request), "wb") as fh:
                pickle.dump(outcome, fh, protocol=pickle.HIGHEST_PROTOCOL)
        except OutputWriteError as exc:
            self._writable = False
            warn(f"{exc}; this run's outcomes are not kept, an interrupted run cannot resume")
