"""MEMIT and AlphaEdit on gemma-3-270m: the four edits of configs/examples/several.yaml in one
batch, over the preset's recorded window, with C from WikiText-2."""

from __future__ import annotations

import pytest
import torch

from factedit.evaluate import measure_request
from factedit.session import EditSession
from factedit.spec import load_spec

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def several(request):
    return load_spec(request.config.rootpath / "configs" / "examples" / "several.yaml")


@pytest.mark.parametrize("method", ["memit", "alphaedit"])
def test_one_batch_rewrites_all_four_facts(gemma, several, wikitext_path, method):
    session = EditSession(gemma, method=method, layers="auto", corpus=[wikitext_path])
    assert session.layers == (2, 3, 4, 5, 6, 7) and session.hparams.v_lr == 2.0
    assert session.hparams.window_passes == 2
    before = {n: p.detach().clone() for n, p in gemma.model.named_parameters()}
    deltas = session.edit(list(several.edits))
    try:
        assert len(deltas) == 6
        first_pass, second_pass = deltas[0].meta["z_reached_by_pass"]
        assert second_pass > first_pass  # the second pass delivers more of z
        for delta in deltas:
            assert delta.meta["relative_norm"] < 1.0
            assert delta.meta["share_reached_mean"] > 0.2, delta.meta
        for request in several.edits:
            rewrite = measure_request(gemma, request, generation=False).group("rewrite")[0]
            assert rewrite.new.nll < rewrite.expected.nll, request.subject
        if method == "alphaedit":
            assert session.state.sequential.n_edits == 4
            assert 500 < deltas[0].meta["null_dim"] < 1500
    finally:
        session.revert()
    for name, weight in gemma.model.named_parameters():
        assert torch.equal(weight, before[name]), name
