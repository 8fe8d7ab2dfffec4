"""Trace results, pictures, aggregation over known facts, noise and the edit-layer choice."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from factedit.errors import FactEditError, SpecError
from factedit.figures import write_figure
from factedit.tokens import target_token_ids
from factedit.trace import aggregate as aggregate_module
from factedit.trace import aggregate_trace, recommend_layer, save_aggregate, trace_fact
from factedit.trace.aggregate import GROUPS, KnownFact, load_known_facts, token_groups
from factedit.trace.noise import embedding_std, noise_std, parse_noise, sample_noise
from factedit.trace.recommend import aggregate_cache_path, resolve_layers
from factedit.trace.render import (
    aggregate_figure,
    layer_ticks,
    terminal_aggregate,
    terminal_heatmap,
    trace_figure,
)
from factedit.trace.result import TraceResult

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


@pytest.fixture(scope="module")
def result(bpe_tokenizer) -> TraceResult:
    from factedit.testing import tiny_model

    lm = tiny_model("llama", bpe_tokenizer)
    return trace_fact(lm, PROMPT, SUBJECT, samples=2, window=2)


def _svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("text")]


def test_png_and_svg_are_valid_and_mark_the_subject(result, tmp_path):
    png, svg = write_figure(trace_figure(result), tmp_path / "trace")
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300
    texts = _svg_texts(svg)
    starred = [t for t in texts if t.endswith("*")]
    a, b = result.subject_span
    # each panel labels the tokens; exactly the subject's tokens carry the star
    assert len(starred) == 3 * (b - a)
    assert {t.strip() for t in starred} == {t.strip() + "*" for t in result.tokens[a:b]}
    assert any("p_clean" in t for t in texts)


def test_json_round_trip_keeps_every_number(result):
    data = json.loads(json.dumps(result.to_json()))
    back = TraceResult.from_json(data)
    for kind in result.grids:
        np.testing.assert_array_equal(back.grids[kind], result.grids[kind])
        assert len(data["grids"][kind]) == len(result.tokens)
        assert len(data["grids"][kind][0]) == 4
    assert data["subject_span"] == list(result.subject_span)
    assert data["recommended_layer"]["layer"] == result.recommended_layer()[0]
    assert data["settings"]["samples"] == 2 and data["settings"]["window"] == 2
    assert data["total_effect"] == pytest.approx(result.p_clean - result.p_corrupt)


def test_recommended_layer_is_the_mlp_peak_at_the_last_subject_token(result):
    layer, effect = result.recommended_layer()
    curve = result.grids["mlp"][result.last_subject_index] - result.p_corrupt
    assert layer == int(np.argmax(curve))
    assert effect == pytest.approx(curve.max())
    t, layer, effect = result.subject_peak("mlp")
    a, b = result.subject_span
    block = result.indirect_effect("mlp")[a:b]
    assert a <= t < b and effect == pytest.approx(block.max())
    assert result.indirect_effect("mlp")[t, layer] == pytest.approx(block.max())


def test_terminal_heatmap_is_plain_text_safe(result):
    console = Console(width=80, record=True, color_system=None)
    console.print(terminal_heatmap(result))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    starred = [line for line in lines if re.match(r"^\s*\S+\*( |$)", line)]
    a, b = result.subject_span
    assert len(starred) == 3 * (b - a)
    assert "0123" in text


def test_token_groups_follow_the_paper():
    # BOS, subject at 1..3 (3 tokens), 4 more tokens, T = 8
    groups = token_groups((1, 4), 8)
    assert groups == [[1], [2], [3], [4], [5, 6], [7]]
    # a one-token subject has no middle; first == last subject token
    assert token_groups((0, 1), 3) == [[0], [], [0], [1], [], [2]]
    # the subject's next token is the last token: both groups hold it, no further tokens
    assert token_groups((0, 2), 3) == [[0], [], [1], [2], [], [2]]


CANDIDATES = [
    (PROMPT, SUBJECT),
    ("Rome is the capital of", "Rome"),
    ("Michael Jordan plays the sport of", "Michael Jordan"),
    ("The iPhone is made by", "iPhone"),
    ("Paris is the capital of", "Paris"),
    ("Apple was founded by", "Apple"),
    ("The Louvre is in", "Louvre"),
    ("Italy is a country in", "Italy"),
]


def own_facts(lm, count):
    """Facts whose attribute is the tiny model's own greedy answer (so they are 'known')."""
    facts = []
    for prompt, subject in CANDIDATES:
        r = trace_fact(lm, prompt, subject, samples=1, kinds=("mlp",), window=1, noise="0")
        # a whitespace-only answer has no target tokens at all: it cannot round-trip
        if r.answer.strip() and target_token_ids(lm.tokenizer, r.answer)[0] == r.answer_id:
            facts.append(KnownFact(subject, prompt, r.answer))
    if len(facts) < count:
        pytest.skip("the tiny model's answers do not round-trip through the tokenizer")
    return facts[:count]


def test_aggregate_keeps_known_facts_and_averages_groups(tiny, tmp_path):
    lm = tiny("llama")
    known = own_facts(lm, 2)
    unknown = KnownFact(known[1].subject, known[1].prompt, "zzzzqqq")
    facts = [known[0], unknown, known[1]]
    agg = aggregate_trace(lm, facts, limit=5, samples=2, window=2)
    assert agg.scanned == 3
    assert len(agg.facts) == 2
    assert agg.effects["mlp"].shape == (len(GROUPS), 4)
    # the last-subject-token row is the mean of the two facts' rows
    rows = [f.indirect_effect("mlp")[f.last_subject_index] for f in agg.facts]
    np.testing.assert_allclose(agg.effects["mlp"][2], np.mean(rows, axis=0))
    assert agg.counts[0] == 2 and agg.counts[5] == 2
    data = json.loads(json.dumps(agg.to_json()))
    assert data["facts_kept"] == 2 and data["facts_scanned"] == 3
    assert data["recommended_layer"]["layer"] == int(np.nanargmax(agg.effects["mlp"][2]))
    png, svg = write_figure(aggregate_figure(agg), tmp_path / "aggregate")
    with Image.open(png) as img:
        img.verify()
    ET.parse(svg)
    console = Console(width=80, record=True, color_system=None)
    console.print(terminal_aggregate(agg))
    assert "last subject token" in console.export_text()


def test_aggregate_limit_stops_scanning(tiny):
    lm = tiny("llama")
    facts = own_facts(lm, 1) * 3
    agg = aggregate_trace(lm, facts, limit=1, samples=1, window=2, kinds=("mlp",))
    assert agg.scanned == 1 and len(agg.facts) == 1


def test_aggregate_resumes_from_its_checkpoints_only_when_settings_match(
    tiny, tmp_path, monkeypatch
):
    lm = tiny("llama")
    facts = own_facts(lm, 2)
    ckpt = tmp_path / "facts"
    first = aggregate_trace(lm, facts, samples=2, window=2, checkpoint_dir=ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["fact-000.json", "fact-001.json"]
    assert first.settings["resumed"] == 0
    # an interrupted run: fact 1 never finished, its file is gone
    (ckpt / "fact-001.json").unlink()
    traced: list[str] = []
    real_trace_fact = aggregate_module.trace_fact

    def counting_trace_fact(lm, prompt, subject, **kw):
        traced.append(prompt)
        return real_trace_fact(lm, prompt, subject, **kw)

    monkeypatch.setattr(aggregate_module, "trace_fact", counting_trace_fact)
    again = aggregate_trace(lm, facts, samples=2, window=2, checkpoint_dir=ckpt)
    assert traced == [facts[1].prompt] and again.settings["resumed"] == 1
    for kind in first.effects:
        np.testing.assert_array_equal(again.effects[kind], first.effects[kind])
    # another seed must not reuse the saved traces
    traced.clear()
    other = aggregate_trace(lm, facts, samples=2, window=2, seed=7, checkpoint_dir=ckpt)
    assert traced == [f.prompt for f in facts] and other.settings["resumed"] == 0
    assert json.loads((ckpt / "fact-000.json").read_text())["settings"]["seed"] == 7
    # a damaged file is traced again, not an error
    (ckpt / "fact-000.json").write_text("{not json")
    traced.clear()
    aggregate_trace(lm, facts, samples=2, window=2, seed=7, checkpoint_dir=ckpt)
    assert traced == [facts[0].prompt]


def test_aggregate_with_no_known_fact_is_an_error(tiny):
    lm = tiny("llama")
    with pytest.raises(FactEditError, match="predicts none"):
        aggregate_trace(lm, [KnownFact("Rome", "Rome is the capital of", "zzzzqqq")], samples=1)


def test_known_facts_file_errors_name_the_record(tmp_path):
    bad = tmp_path / "facts.json"
    bad.write_text(json.dumps([{"subject": "A", "prompt": "A is", "attribute": "b"}, {"x": 1}]))
    with pytest.raises(SpecError, match=r"fact #1 .*'subject'"):
        load_known_facts(bad)


@pytest.fixture
def known_facts_file(data_file):
    """ROME's known facts (benchmark data, 1,209 records); skips the test when absent."""
    return data_file("known-facts.json")


def test_the_benchmark_known_facts_load(known_facts_file):
    facts = load_known_facts(known_facts_file)
    assert len(facts) > 1000 and facts[0].subject in facts[0].prompt


def test_noise_parsing_and_seeded_sampling(tiny):
    assert parse_noise("3x") == ("relative", 3.0)
    assert parse_noise(0.25) == ("absolute", 0.25)
    for bad in ("x", "three", "-1", "nan"):
        with pytest.raises(FactEditError):
            parse_noise(bad)
    a, b = sample_noise(4, 2, 8, seed=1), sample_noise(4, 2, 8, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, sample_noise(4, 2, 8, seed=2))
    lm = tiny("gemma3_text")  # scales its embeddings inside the embedding module
    ids = [5, 6, 7]
    raw = lm.arch.embed().weight[ids].float().std().item()
    measured = embedding_std(lm, ids)
    assert measured != pytest.approx(raw, rel=1e-3)  # the output, not the matrix, is measured
    out = lm.arch.embed()(torch.tensor([ids])).float().std().item()
    assert measured == pytest.approx(out)
    assert noise_std(lm, "3x", ids) == pytest.approx(3 * out)
    assert noise_std(lm, "0.5", ids) == 0.5


def test_recommend_layer_traces_requests_then_uses_the_cache(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path))
    lm = tiny("llama")
    request = SimpleNamespace(
        subject="Eiffel Tower",
        prompt="The {} is located in the city of",
        rewrite_prompt=PROMPT,
    )
    layer, why = recommend_layer(lm, [request], samples=2)
    assert 0 <= layer < 4 and f"layer {layer}" in why and "1 traced fact" in why
    direct = trace_fact(lm, PROMPT, SUBJECT, samples=2, kinds=("mlp",))
    assert layer == direct.recommended_layer()[0]

    facts = own_facts(lm, 1)
    agg = aggregate_trace(lm, facts, samples=1, window=2)
    agg.effects["mlp"][2] = [0.0, 0.0, 0.0, 0.5]  # make the cached choice recognisable
    path = save_aggregate(lm, agg)
    assert path == aggregate_cache_path(lm.identity) and path.is_file()
    layer, why = recommend_layer(lm, [request], samples=2)
    assert layer == 3 and "cached aggregate" in why
    layer, why = recommend_layer(lm, [request], samples=2, use_cache=False)
    assert "cached" not in why


def test_layers_auto_prefers_the_presets_recorded_layer_over_a_cached_trace(
    tiny, tmp_path, monkeypatch
):

    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path))
    lm = tiny("llama")
    agg = aggregate_trace(lm, own_facts(lm, 1), samples=1, window=2)
    agg.effects["mlp"][2] = [0.0, 0.0, 0.0, 0.5]  # the cached trace says layer 3
    save_aggregate(lm, agg)
    lm.default_layer = None  # not a preset: the cached trace decides
    assert resolve_layers(lm, "auto", [])[0] == (3,)
    lm.default_layer = 1  # a preset's recorded choice wins over the bare MLP peak
    layers, why = resolve_layers(lm, "auto", [])
    assert layers == (1,) and "recorded for these weights" in why
    assert resolve_layers(lm, [2], [])[0] == (2,)


@pytest.mark.parametrize(
    ("num_layers", "ticks"),
    [(4, [0, 1, 2, 3]), (18, [0, 2, 4, 6, 8, 10, 12, 14, 16]), (30, [0, 5, 10, 15, 20, 25])],
)
def test_layer_ticks_stay_readable_at_any_depth(num_layers, ticks):
    assert list(layer_ticks(num_layers)) == ticks
    assert len(layer_ticks(48)) <= 9 and len(layer_ticks(80)) <= 9
