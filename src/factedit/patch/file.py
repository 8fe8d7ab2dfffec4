"""The patch file on disk: one safetensors file whose header also carries a checksum.

    write_patch(path, tensors, header)     # atomic; returns the bytes written
    tensors, header = read_patch(path)     # PatchError when unreadable or changed

safetensors already refuses a truncated file (its header states every tensor's byte range);
the ``factedit.sha256`` entry, a sha256 over every tensor (name, dtype, shape, bytes) and
every other header entry, makes any other change to the file — a flipped byte in a tensor,
an edited JSON field — a refusal too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from factedit.errors import PatchError
from factedit.patch.fingerprint import tensor_bytes
from factedit.paths import atomic_file

#: The header key of the checksum.
CHECKSUM_KEY = "factedit.sha256"
#: The header key every patch has (the JSON provenance: base model, method, edits, ...).
INFO_KEY = "factedit.patch"


def checksum(tensors: Mapping[str, torch.Tensor], header: Mapping[str, str]) -> str:
    """sha256 over the tensors (sorted by name: name, dtype, shape, bytes) and the header
    entries other than the checksum itself (sorted by key), hex."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor_bytes(tensor))
    for key in sorted(k for k in header if k != CHECKSUM_KEY):
        h.update(f"{key}={header[key]}\0".encode())
    return h.hexdigest()


def write_patch(
    path: str | Path, tensors: Mapping[str, torch.Tensor], header: dict[str, str]
) -> int:
    """Write ``tensors`` (CPU, contiguous) with ``header`` and its checksum, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {**header, CHECKSUM_KEY: checksum(tensors, header)}
    data = save(tensors, metadata=header)
    with atomic_file(path) as fh:
        fh.write(data)
    return len(data)


def read_patch(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header of the patch at ``path``, checked against its checksum."""
    path = Path(path)
    if not path.is_file():
        raise PatchError(f"{path}: no such patch file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PatchError(
            f"{path} is not a readable patch (truncated, or not safetensors: {reason})"
        ) from None
    if INFO_KEY not in header or CHECKSUM_KEY not in header:
        raise PatchError(
            f"{path} is a safetensors file but not a factedit patch (no {INFO_KEY} header); "
            "write one with `factedit edit apply SPEC --patch FILE`"
        )
    if checksum(tensors, header) != header[CHECKSUM_KEY]:
        raise PatchError(
            f"{path}: checksum mismatch, the file was changed after it was written; "
            "use an intact copy"
        )
    return tensors, header
