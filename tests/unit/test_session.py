"""The edit session: compute leaves the model alone, apply/revert are exact, deltas save and
load, a batch of ROME requests is edited one after another, and the one apply-in-order loop."""

from __future__ import annotations

import hashlib

import pytest
import torch

from factedit.edit_loop import apply_in_order
from factedit.errors import RefusedEdit
from factedit.session import EditSession
from factedit.spec import EditRequest

FAST = {"mom2_n_tokens": 1_500, "v_num_grad_steps": 4, "context_templates_per_length": 1}
FIRST = EditRequest(subject="Eiffel Tower", prompt="The {} is in", target_new="Rome")
SECOND = EditRequest(subject="Michael Jordan", prompt="{} plays", target_new="chess")


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode() + p.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def session(tiny, corpus_path):
    return EditSession(tiny("llama"), layers=[1], hparams=FAST, corpus=[corpus_path])


def test_compute_apply_revert_save_load(session, tmp_path):
    lm = session.lm
    original = _digest(lm.model)
    deltas = session.compute([FIRST])
    assert _digest(lm.model) == original, "computing must not change the model"
    session.apply(deltas)
    edited = _digest(lm.model)
    assert edited != original and session.deltas == deltas
    session.save(tmp_path / "patch.safetensors")
    session.revert()
    assert _digest(lm.model) == original and session.deltas == []
    loaded = session.load(tmp_path / "patch.safetensors")
    assert _digest(lm.model) == edited
    assert [d.meta["subject"] for d in loaded] == ["Eiffel Tower"]
    session.revert()
    assert _digest(lm.model) == original


def test_a_rome_batch_is_edited_one_after_another(session):
    together = session.compute([FIRST, SECOND])
    first = session.compute([FIRST])
    session.apply(first)
    second = session.compute([SECOND])  # on the model that carries the first edit
    session.revert()
    for a, b in zip(together, first + second, strict=True):
        assert torch.allclose(a.dense(), b.dense(), atol=1e-6)


def test_apply_in_order_measures_before_and_after_and_goes_on_after_a_refusal(session):
    original = _digest(session.lm.model)
    compute = session.compute

    def refuse_second(requests):
        if requests[0] is SECOND:
            raise RefusedEdit("too large")
        return compute(requests)

    session.compute = refuse_second
    seen = []

    def measure(indices, requests):
        seen.append(list(indices))
        return [_digest(session.lm.model) for _ in requests]

    run = apply_in_order(session, [FIRST, SECOND], measure)
    assert seen == [[0, 1], [0, 1]]  # pooled: one call per model state
    assert run.before == [original, original]
    assert run.after[0] == run.after[1] != original  # both measured on the final model
    assert [s.status for s in run.steps] == ["applied", "refused"]
    assert run.steps[1].reason == "too large" and run.refused == [run.steps[1]]
    session.revert()
    assert _digest(session.lm.model) == original


def test_apply_in_order_reverts_everything_when_a_step_fails(session):
    original = _digest(session.lm.model)
    calls = []

    def measure(indices, requests):
        calls.append(list(indices))
        if len(calls) == 2:  # the measurement after both edits
            raise KeyboardInterrupt
        return [None] * len(requests)

    with pytest.raises(KeyboardInterrupt):
        apply_in_order(session, [FIRST, SECOND], measure)
    assert _digest(session.lm.model) == original and session.deltas == []
