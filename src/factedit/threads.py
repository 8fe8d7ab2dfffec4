"""CPU threads: torch uses every core this process is given, unless the user chose.

    n = use_given_cores()        # load_model calls it for a CPU model; returns the count

"Given" is the process's CPU affinity (``os.sched_getaffinity``: what ``taskset``, a cgroup
cpuset or a batch scheduler allows), which torch's default (the machine's physical cores)
can exceed or fall short of. ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) set in the
environment is the user's choice and is left alone; so is an explicit
``torch.set_num_threads`` made before (recorded by :func:`choose_threads`).
"""

from __future__ import annotations

import os

import torch

_CHOSEN: list[int] = []  # threads set explicitly through choose_threads


def given_cores() -> int:
    """The cores this process may run on (all of ``os.cpu_count()`` where affinity is not
    available)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(n: int) -> None:
    """Set torch's intra-op threads to ``n`` and keep them (later loads do not change them)."""
    torch.set_num_threads(n)
    _CHOSEN[:] = [n]


def use_given_cores() -> int:
    """Set torch's intra-op threads to :func:`given_cores` unless the environment or
    :func:`choose_threads` chose; return the count torch now uses."""
    if not _CHOSEN and not any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        cores = given_cores()
        if torch.get_num_threads() != cores:
            torch.set_num_threads(cores)
    return torch.get_num_threads()
