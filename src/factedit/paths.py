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
import signal
import stat
import tempfile
import threading
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

    Ctrl-C (SIGINT) and SIGTERM mean stop at every moment: while the block writes, they raise
    :class:`KeyboardInterrupt` as usual, and one that a library inside the block swallowed is
    still seen before the rename; one that arrives during the rename undoes it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
    with reported_as(path), watched_interrupts() as interrupts:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            interrupts.check()
            os.chmod(tmp, _final_mode(path, 0o777))
            _commit(tmp, path, interrupts)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class Interrupts:
    """SIGINT / SIGTERM seen since a point in time (see :func:`watched_interrupts`)."""

    received = 0  # signals seen by any watcher in this process (class-wide counter)

    def __init__(self) -> None:
        self.start = Interrupts.received
        self.deferred = False

    def handler(self, _signum: int, _frame: object) -> None:
        Interrupts.received += 1
        if not self.deferred:
            raise KeyboardInterrupt

    @property
    def seen(self) -> bool:
        return Interrupts.received > self.start

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` if a signal came, even one swallowed since."""
        if self.seen:
            raise KeyboardInterrupt


@contextlib.contextmanager
def watched_interrupts() -> Iterator[Interrupts]:
    """Count SIGINT and SIGTERM (both raising :class:`KeyboardInterrupt`) inside the block.

    Off the main thread no handler can be installed and nothing is counted.
    """
    watcher = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield watcher
        return
    previous = {sig: signal.signal(sig, watcher.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield watcher
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _commit(tmp: Path, path: Path, interrupts: Interrupts) -> None:
    """Rename ``tmp`` to ``path`` with signals held; one that came meanwhile undoes it."""
    interrupts.deferred = True
    try:
        old = _swap_in(tmp, path)
        if interrupts.seen:
            os.replace(path, tmp)
            if old is not None:
                os.replace(old, path)
            raise KeyboardInterrupt
    finally:
        interrupts.deferred = False
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _final_mode(path: Path, default: int) -> int:
    """The permissions an output at ``path`` gets: those of the file it replaces, else
    ``default`` less the umask (as ``open`` would give). ``mkstemp`` / ``mkdtemp`` create
    their temporaries owner-only (0600 / 0700), which must not leak into the outputs."""
    with contextlib.suppress(FileNotFoundError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask


def _swap_in(tmp: Path, path: Path) -> Path | None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is moved aside first and put back if
    the rename fails. Returns where the previous ``path`` now is (None if there was none)."""
    if not path.exists():
        os.replace(tmp, path)
        return None
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    return old
