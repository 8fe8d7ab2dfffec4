"""CPU threads: every core the process is given, unless the environment or the user chose."""

from __future__ import annotations

import pytest
import torch

from factedit import threads


@pytest.fixture
def restore(monkeypatch):
    old = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_CHOSEN", [])
    yield monkeypatch
    torch.set_num_threads(old)


def test_threads_follow_the_cpu_affinity(restore):
    restore.setattr(threads.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    torch.set_num_threads(1)
    assert threads.use_given_cores() == 3 == torch.get_num_threads()
    restore.setattr(threads.os, "sched_getaffinity", lambda _pid: {5}, raising=False)
    assert threads.use_given_cores() == 1


def test_the_environment_and_an_explicit_choice_win(restore):
    restore.setattr(threads.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    torch.set_num_threads(1)
    restore.setenv("OMP_NUM_THREADS", "1")
    assert threads.use_given_cores() == 1
    restore.delenv("OMP_NUM_THREADS")
    threads.choose_threads(2)
    assert threads.use_given_cores() == 2


def test_loading_a_model_on_the_cpu_uses_the_given_cores(restore, tiny, tmp_path):
    from factedit.models import load_model

    lm = tiny("gpt2")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    restore.setattr(threads.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    torch.set_num_threads(1)
    load_model(str(tmp_path / "m"), device="cpu")
    assert torch.get_num_threads() == 2
