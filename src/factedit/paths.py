"""The user cache directory (``$FACTEDIT_HOME``, default ``~/.cache/factedit``) and atomic writes.

Nothing factedit writes is ever half-written: files go to a temporary sibling and are renamed
into place; directories are built in a temporary sibling directory and renamed. A write that
fails (a full disk, a read-only directory) raises :class:`~factedit.errors.OutputWriteError`
naming the path, leaves the previous file or directory as it was and no temporary behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from factedit.errors import OutputWriteError


def home() -> Path:
    """Root of factedit's caches (models, statistics, context templates, traces)."""
    root = os.environ.get("FACTEDIT_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "factedit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    """A sub-directory of :func:`home`, created on demand."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def reported_as(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` (ENOSPC, EACCES, ...) raised inside into :class:`OutputWriteError`
    naming ``path``; one that already names an inner path is renamed to ``path``."""
    try:
        yield
    except OutputWriteError as exc:
        raise OutputWriteError(path, exc.cause) from exc.cause
    except OSError as exc:
        raise OutputWriteError(path, exc) from exc


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator:
    """Write ``path`` through a temporary sibling, renamed into place only on success.

    On any failure (an exception, Ctrl-C, a full disk) the temporary file is removed and a
    previous ``path`` is left as it was; an ``OSError`` becomes :class:`OutputWriteError`.
    """
    path = Path(path)
    with reported_as(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, mode) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _final_mode(path, 0o666))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, see :func:`atomic_file`."""
    with atomic_file(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    An existing ``path`` is replaced only with ``overwrite`` (and only after success). On any
    failure the temporary directory is removed, a previous ``path`` is left (or put back) as
    it was, and an ``OSError`` becomes :class:`OutputWriteError` naming ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
    with reported_as(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, _final_mode(path, 0o777))
            _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _final_mode(path: Path, default: int) -> int:
    """The permissions an output at ``path`` gets: those of the file it replaces, else
    ``default`` less the umask (as ``open`` would give). ``mkstemp`` / ``mkdtemp`` create
    their temporaries owner-only (0600 / 0700), which must not leak into the outputs."""
    with contextlib.suppress(FileNotFoundError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is put back if that fails."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
