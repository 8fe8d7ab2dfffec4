"""Named benchmarks: ``factedit eval counterfact | zsre | counterfact-mass``.

    path = resolve_source("counterfact", data=None)   # the cached copy (downloaded once)
    path = resolve_source("facts.yaml", data=None)    # a file that exists is itself

A name that is not an existing path is looked up in :data:`BENCHMARKS`. ``--data FILE``
gives a local copy of the named set (no download, no cache). Otherwise the copy under
``$FACTEDIT_HOME/datasets/NAME/`` is used, or the authors' release is downloaded on first use:
written through a temporary file, parsed as the set's record format (its first
:data:`FORMAT_CHECK_RECORDS` records must load; the rest are checked when a run selects them)
and only then moved into place, with its sha256 beside it (``FILE.sha256``). Every later use
checks the copy against that digest, so a truncated or altered cache is an error that names
the file to delete, not a silently different benchmark. Offline with no cache, the error is
one line naming the URL and ``--data FILE``.
"""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from factedit.console import info, progress
from factedit.errors import FactEditError
from factedit.paths import atomic_file, atomic_write_text, home

#: seconds before an unanswered connection counts as offline
TIMEOUT_S = 30
_CHUNK = 1 << 20
#: records of a fresh download parsed as its format before it is cached
FORMAT_CHECK_RECORDS = 100


@dataclass(frozen=True)
class Benchmark:
    """A public benchmark file: where its authors publish it and what it is."""

    name: str
    url: str
    filename: str
    what: str


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "counterfact",
            "https://rome.baulab.info/data/dsets/counterfact.json",
            "counterfact.json",
            "CounterFact (Meng et al. 2022), ROME record format, the ROME authors' release",
        ),
        Benchmark(
            "zsre",
            "https://rome.baulab.info/data/dsets/zsre_mend_eval.json",
            "zsre_mend_eval.json",
            "zsRE question-answering edits, MEND's evaluation split as released with ROME",
        ),
        Benchmark(
            "counterfact-mass",
            "https://raw.githubusercontent.com/Jometeorie/KnowledgeSpread/main/data/"
            "counterfact/counterfact-edit.json",
            "counterfact-edit.json",
            "CounterFact in the flattened EasyEdit/MEND layout (rewrite, rephrase, locality)",
        ),
    )
}


def resolve_source(source: str | Path, data: Path | None = None) -> Path:
    """The file to read for ``source``: itself when it exists (or names no benchmark), else
    ``data`` or the checked cached copy of the named benchmark (downloaded on first use)."""
    path = Path(source)
    bench = BENCHMARKS.get(str(source))
    if bench is None or path.exists():
        if data is not None:
            raise FactEditError(f"--data FILE is for a named benchmark ({', '.join(BENCHMARKS)})")
        return path
    if data is not None:
        if not data.is_file():
            raise FactEditError(f"--data {data}: no such file")
        return data
    cached = cache_path(bench)
    if cached.is_file():
        check_cached(cached)
        return cached
    return download(bench, cached)


def cache_path(bench: Benchmark) -> Path:
    return home() / "datasets" / bench.name / bench.filename


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_cached(path: Path) -> None:
    """Raise when ``path`` no longer has the sha256 recorded when it was downloaded."""
    recorded = _digest_path(path)
    want = recorded.read_text().split()[0] if recorded.is_file() else None
    if want is None or file_sha256(path) != want:
        why = "has no recorded sha256" if want is None else "does not match its recorded sha256"
        raise FactEditError(f"the cached benchmark {path} {why}: delete it to download it again")


def download(bench: Benchmark, path: Path) -> Path:
    """Fetch ``bench`` into ``path`` (checked, atomic) and record its sha256."""
    from factedit.spec import load_spec  # the record formats (imported when needed)

    info(f"downloading benchmark {bench.name} from {bench.url} (network, once)")
    fetched = path.with_name(path.name + ".download")
    try:
        with urllib.request.urlopen(bench.url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with atomic_file(fetched, "wb") as fh, progress() as bar:
                task = bar.add_task(f"benchmark {bench.name}", total=total)
                for block in iter(lambda: response.read(_CHUNK), b""):
                    fh.write(block)
                    bar.advance(task, len(block))
    except OSError as exc:  # URLError, timeouts, refused connections are all OSErrors
        raise FactEditError(
            f"benchmark {bench.name} is not cached and cannot be downloaded from {bench.url} "
            f"({type(exc).__name__}: {exc}); fetch that file yourself and pass it with "
            "--data FILE"
        ) from None
    try:
        load_spec(fetched, limit=FORMAT_CHECK_RECORDS)
    except FactEditError as exc:
        fetched.unlink(missing_ok=True)
        raise FactEditError(
            f"benchmark {bench.name}: the file from {bench.url} is not in its format ({exc})"
        ) from None
    atomic_write_text(_digest_path(path), f"{file_sha256(fetched)}  {bench.filename}\n")
    fetched.replace(path)
    info(f"cached benchmark {bench.name} in {path} ({bench.what})")
    return path
