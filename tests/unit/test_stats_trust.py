"""Statistics you can trust: C records its token count and conditioning, an ill-conditioned C
is refused, and C computed on an edited model is cached under that model's own key."""

from __future__ import annotations

import json

import pytest
import torch

from factedit.methods.hparams import RomeHParams
from factedit.methods.state import MethodState
from factedit.session import EditSession
from factedit.spec import EditRequest
from factedit.stats import cache
from factedit.stats.conditioning import IllConditionedStatistics, conditioning
from factedit.stats.moment import stats_key
from factedit.testing import small_delta

REQUEST = EditRequest(subject="Eiffel Tower", prompt="The {} is in", target_new="Rome")


def test_conditioning_of_a_known_matrix():
    C = torch.diag(torch.tensor([4.0, 1.0, 0.5]))
    info = conditioning(C, n_tokens=10)
    assert (info.eig_min, info.eig_max, info.condition) == pytest.approx((0.5, 4.0, 8.0))
    assert info.to_dict()["n_tokens"] == 10 and info.dim == 3


def test_c_from_fewer_tokens_than_dimensions_is_refused(tiny, corpus_path):
    lm = tiny("llama")
    d_in = lm.arch.down_proj_weight(1).shape[1]
    session = EditSession(
        lm, layers=[1], hparams={"mom2_n_tokens": d_in // 4}, corpus=[corpus_path]
    )
    with pytest.raises(IllConditionedStatistics, match=r"layer 1 .*condition number") as exc:
        session.compute([REQUEST])
    assert f"from {d_in // 4} token vectors in {d_in} dimensions" in str(exc.value)
    assert "mom2_n_tokens" in str(exc.value)


def test_c_records_tokens_and_conditioning(tiny, corpus_path):
    lm = tiny("qwen2")
    state = MethodState(RomeHParams(mom2_n_tokens=1500), corpus=[corpus_path], n_tokens=1500)
    C = state.second_moment(lm, 1)
    info = state.conditioning[1]
    assert info.n_tokens == 1500 and 1 < info.condition < 1e10
    assert info.condition == pytest.approx(conditioning(C, 1500).condition, rel=1e-6)
    session = EditSession(lm, layers=[1], hparams={"mom2_n_tokens": 1500}, corpus=[corpus_path])
    (delta,) = session.compute([REQUEST])
    assert delta.meta["c_tokens"] == 1500
    assert delta.meta["c_condition"] == pytest.approx(info.condition, rel=1e-6)
    key = stats_key(lm, 1, [corpus_path], 1500, 256, "float32")
    sidecar = json.loads(cache.Entry.for_key(key).sidecar_path.read_text())
    assert sidecar["n_tokens"] == 1500 and sidecar["condition"] == pytest.approx(info.condition)


def test_c_on_an_edited_model_never_lands_under_the_base_key(tiny, corpus_path):
    lm = tiny("gpt2")
    base = lm.identity
    session = EditSession(lm, layers=[1], hparams={"mom2_n_tokens": 1200}, corpus=[corpus_path])
    session.apply([small_delta(lm, layer=0, scale=1.0)])  # changes what layer 1's keys see
    edited = lm.identity
    assert edited.startswith(base + "+edits:") and edited != base
    C_edited = session.state.second_moment(lm, 1)
    session.revert()
    assert lm.identity == base
    C_base = MethodState(RomeHParams(), corpus=[corpus_path], n_tokens=1200).second_moment(lm, 1)
    assert not torch.allclose(C_base, C_edited), "the edit below layer 1 changes its keys"
    for identity in (base, edited):
        key = {**stats_key(lm, 1, [corpus_path], 1200, 256, "float32"), "model": identity}
        assert cache.Entry.for_key(key).tensor_path.is_file(), identity
