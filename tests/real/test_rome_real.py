"""ROME on the real presets: the Eiffel Tower moves to Rome, and nothing else moves.

Asserts the issue's acceptance test on gemma-3-270m (default preset, `layers: auto`) and the
same edit on smollm2-135m.
"""

from __future__ import annotations

import pytest

from factedit.delta import apply_deltas
from factedit.evaluate import measure_request
from factedit.session import EditSession
from factedit.spec import load_spec

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def eiffel(request):
    return load_spec(request.config.rootpath / "configs" / "examples" / "eiffel.yaml")


def _prefers(m, group: str) -> list[bool]:
    """Per prompt of ``group``: is target_new more likely than the expected answer?"""
    return [p.new.nll < p.expected.nll for p in m.group(group)]


def _edit(lm, spec, wikitext_path):
    req = spec.edits[0]
    before = measure_request(lm, req)
    session = EditSession(lm, layers="auto", corpus=[wikitext_path], seed=spec.seed, requests=[req])
    deltas = session.compute([req])
    with apply_deltas(lm.model, deltas):
        after = measure_request(lm, req)
    return before, after, deltas


_CACHE: dict[str, tuple] = {}


@pytest.fixture(params=["gemma", "smollm"])
def edited(request, eiffel, wikitext_path):
    """(before, after, deltas) of the Eiffel edit on each preset, computed once."""
    if request.param not in _CACHE:
        lm = request.getfixturevalue(request.param)
        _CACHE[request.param] = _edit(lm, eiffel, wikitext_path)
    return _CACHE[request.param]


def test_eiffel_tower_moves_to_rome(edited, eiffel):
    before, after, deltas = edited
    req = eiffel.edits[0]
    assert not any(_prefers(before, "rewrite")), "unedited model should answer Paris"
    assert all(_prefers(after, "rewrite"))
    # paraphrases were never optimised on: most must follow the edit
    assert sum(_prefers(after, "paraphrase")) >= len(req.paraphrases) - 1
    assert deltas[0].meta["relative_norm"] < 1.0


def test_eiffel_neighbours_keep_their_answers(edited):
    """Other Paris landmarks and other cities' landmarks keep their answers (at most one
    neighbour may flip): the acceptance test of issue #2, at each preset's recorded layer."""
    before, after, _ = edited
    kept = [
        b.expected.nll < b.new.nll and a.expected.nll < a.new.nll
        for b, a in zip(before.group("neighborhood"), after.group("neighborhood"), strict=True)
        if b.expected.nll < b.new.nll
    ]
    assert sum(kept) >= len(kept) - 1, kept
