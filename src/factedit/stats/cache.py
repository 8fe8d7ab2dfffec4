"""On-disk cache of second-moment statistics under ``$FACTEDIT_HOME/stats/``.

One entry per key (model identity, layer, module, corpus digest, n_tokens, seq_len, dtype):

    <id>.safetensors          C [d_in, d_in] ("C"), complete entries only
    <id>.json                 sidecar: the readable key, sha256 of C's bytes, who computed it
    <id>.partial.safetensors  resumable checkpoint: float64 sum, count, next sequence index
    <id>.lock                 file lock (``filelock``) held while an entry is collected

``<id>`` is the sha256 of the key's JSON. A complete entry is used only when its checksum
matches; a partial checkpoint is never read as a complete entry. All files are written through
:func:`factedit.paths.atomic_file`. An in-process memo keeps entries already read or computed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from filelock import FileLock, Timeout

from factedit.console import info, warn
from factedit.errors import OutputWriteError, StatsError
from factedit.paths import atomic_file, cache_dir
from factedit.stats.collect import Accumulator

FORMAT_VERSION = 1
_MEMO: dict[tuple[str, str], torch.Tensor] = {}


def key_id(key: dict[str, Any]) -> str:
    """File-name stem of an entry: sha256 of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """The files of one cache entry."""

    root: Path
    key: dict[str, Any]

    @classmethod
    def for_key(cls, key: dict[str, Any]) -> Entry:
        return cls(cache_dir("stats"), key)

    @property
    def id(self) -> str:
        return key_id(self.key)

    @property
    def tensor_path(self) -> Path:
        return self.root / f"{self.id}.safetensors"

    @property
    def sidecar_path(self) -> Path:
        return self.root / f"{self.id}.json"

    @property
    def partial_path(self) -> Path:
        return self.root / f"{self.id}.partial.safetensors"

    @property
    def lock_path(self) -> Path:
        return self.root / f"{self.id}.lock"

    @property
    def memo_key(self) -> tuple[str, str]:
        return (str(self.root.resolve()), self.id)


# ---- in-process memo --------------------------------------------------------------------


def memo_get(entry: Entry) -> torch.Tensor | None:
    return _MEMO.get(entry.memo_key)


def memo_put(entry: Entry, tensor: torch.Tensor) -> None:
    _MEMO[entry.memo_key] = tensor


def clear_memo() -> None:
    """Forget entries read in this process (the disk cache stays)."""
    _MEMO.clear()


# ---- locking -----------------------------------------------------------------------------


@contextlib.contextmanager
def locked(entry: Entry) -> Iterator[None]:
    """Hold the entry's exclusive lock; a second process waits here until the first is done."""
    with file_lock(entry.lock_path, f"collecting {entry.tensor_path.name}"):
        yield


@contextlib.contextmanager
def file_lock(lock_path: Path, doing: str) -> Iterator[None]:
    """Hold an exclusive cross-process lock on ``lock_path`` (``filelock``: works on Linux,
    macOS and Windows); says so when it has to wait for another process ``doing``."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        info(f"waiting for another process {doing}")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ---- complete entries --------------------------------------------------------------------


def load(entry: Entry) -> torch.Tensor | None:
    """The entry's C on CPU, or None when absent; a corrupt entry is deleted with a warning."""
    if not entry.sidecar_path.is_file() or not entry.tensor_path.is_file():
        return None
    try:
        sidecar = json.loads(entry.sidecar_path.read_text())
        tensor = safetensors.torch.load_file(entry.tensor_path)["C"]
        ok = sidecar.get("sha256") == tensor_sha256(tensor) and sidecar.get("key") == entry.key
    except (OSError, ValueError, KeyError, safetensors.SafetensorError):
        ok = False
    if not ok:
        warn(f"statistics cache entry {entry.tensor_path} is corrupt; deleting and recomputing")
        discard(entry)
        return None
    return tensor


def save(entry: Entry, tensor: torch.Tensor, extra: dict[str, Any]) -> None:
    """Write C and its sidecar atomically; a failed write raises StatsError naming the path."""
    tensor = tensor.detach().cpu().contiguous()
    sidecar = {
        "format": FORMAT_VERSION,
        "key": entry.key,
        "sha256": tensor_sha256(tensor),
        "shape": list(tensor.shape),
        **extra,
    }
    meta = {"key": json.dumps(entry.key, sort_keys=True)}
    _write(entry.tensor_path, safetensors.torch.save({"C": tensor}, metadata=meta))
    try:
        _write(entry.sidecar_path, json.dumps(sidecar, indent=2).encode())
    except StatsError:
        with contextlib.suppress(FileNotFoundError):
            entry.tensor_path.unlink()
        raise


def discard(entry: Entry) -> None:
    for path in (entry.tensor_path, entry.sidecar_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write(path: Path, data: bytes) -> None:
    try:
        with atomic_file(path, "wb") as fh:
            fh.write(data)
    except OutputWriteError as exc:
        raise StatsError(
            f"cannot write the statistics cache file {path}: {exc.reason} "
            "(free some disk space, or point FACTEDIT_HOME at another disk)"
        ) from exc


# ---- partial checkpoints -----------------------------------------------------------------


def load_partial(entry: Entry) -> Accumulator | None:
    """The checkpoint of an interrupted collection (float64 sum on CPU), or None."""
    if not entry.partial_path.is_file():
        return None
    try:
        with safetensors.safe_open(entry.partial_path, framework="pt") as fh:
            meta = fh.metadata() or {}
            total = fh.get_tensor("total")
        ok = (
            meta.get("sha256") == tensor_sha256(total)
            and json.loads(meta.get("key", "null")) == entry.key
            and total.dtype == torch.float64
        )
        state = Accumulator(total, int(meta["count"]), int(meta["next_seq"]))
    except (OSError, ValueError, KeyError, safetensors.SafetensorError):
        ok = False
    if not ok:
        warn(f"partial statistics {entry.partial_path} are unreadable; starting over")
        drop_partial(entry)
        return None
    return state


def save_partial(entry: Entry, state: Accumulator, batch_size: int) -> None:
    """Checkpoint ``state`` (float64 sum, count, next sequence index) atomically."""
    if state.total is None:
        return
    total = state.total.detach().cpu().contiguous()
    meta = {
        "key": json.dumps(entry.key, sort_keys=True),
        "count": str(state.count),
        "next_seq": str(state.next_seq),
        "batch_size": str(batch_size),
        "sha256": tensor_sha256(total),
        "pid": str(os.getpid()),
    }
    _write(entry.partial_path, safetensors.torch.save({"total": total}, metadata=meta))


def drop_partial(entry: Entry) -> None:
    with contextlib.suppress(FileNotFoundError):
        entry.partial_path.unlink()


# ---- listing -----------------------------------------------------------------------------


def list_cached() -> list[dict[str, Any]]:
    """Complete entries on disk: each sidecar's key plus ``file``, ``bytes`` and its extras."""
    rows = []
    for sidecar in sorted(cache_dir("stats").glob("*.json")):
        tensor = sidecar.with_suffix(".safetensors")
        try:
            data = json.loads(sidecar.read_text())
            size = tensor.stat().st_size
        except (OSError, ValueError):
            continue
        extras = {k: v for k, v in data.items() if k not in {"key", "format"}}
        rows.append({**data.get("key", {}), **extras, "file": str(tensor), "bytes": size})
    return sorted(rows, key=lambda r: (str(r.get("model")), r.get("layer", -1), r["file"]))
