"""Running a fresh Python process from a test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_python(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``cwd`` with exactly ``env``; fails the test unless it exits 0."""
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=dict(env), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def run_ranks(
    script: Path, argv: Sequence[Sequence[str]], *, env: Mapping[str, str], timeout: int = 600
) -> list[tuple[int, str, str]]:
    """``python SCRIPT ARGV[r]`` for every rank r at once (they meet in a process group);
    (return code, stdout, stderr) of each, in rank order."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in argv
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        results.append((proc.returncode, stdout, stderr))
    return results


SRC = Path(__file__).resolve().parents[1] / "src"


def worker_env(home: Path, *paths: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process: this one's, with ``FACTEDIT_HOME=home``,
    ``FACTEDIT_QUIET=1`` (unless ``extra`` says otherwise) and the package source (then
    ``paths``) first on ``PYTHONPATH``."""
    python_path = [str(SRC), *map(str, paths), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "FACTEDIT_HOME": str(home),
        "FACTEDIT_QUIET": "1",
        "PYTHONPATH": os.pathsep.join(python_path),
        **extra,
    }
