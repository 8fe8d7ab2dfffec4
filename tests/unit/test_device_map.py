"""A tiny model dispatched by accelerate (layers on the CPU and offloaded to the disk) traces,
edits and evaluates with the same numbers as on one device."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factedit.delta import apply_deltas
from factedit.errors import FactEditError
from factedit.evaluate import measure_request, request_metrics
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import EditRequest
from factedit.trace.fact import trace_fact

pytestmark = pytest.mark.usefixtures("one_thread")

#: layers 0-1 and the rest on the CPU, layers 2-3 offloaded to the disk
DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "cpu",
    "model.layers.2": "disk",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}
FACT = EditRequest(
    subject="Eiffel Tower",
    prompt="The {} is in",
    target_new="Rome",
    target_true="Paris",
    paraphrases=("The Eiffel Tower stands in",),
    neighborhood=("The Louvre is in",),
)
HPARAMS = {"mom2_n_tokens": 1_500, "v_num_grad_steps": 6}


@pytest.fixture
def both(tiny, tmp_path, home):
    """(the model on one device, the same directory loaded with DEVICE_MAP)."""
    directory = tmp_path / "tiny-llama"
    lm = tiny("llama")
    lm.model.save_pretrained(directory)
    lm.tokenizer.save_pretrained(directory)
    one = load_model(str(directory), device="cpu")
    split = load_model(str(directory), device_map=DEVICE_MAP)
    assert split.arch.down_proj_weight(3).device.type == "meta"  # really offloaded
    return one, split


def test_the_split_model_has_the_same_identity_and_logits(both):
    one, split = both
    assert split.base_identity == one.base_identity  # offloaded weights are read, not skipped
    assert split.device == torch.device("cpu")
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    torch.testing.assert_close(split.model(input_ids=ids).logits, one.model(input_ids=ids).logits)


def test_trace_is_the_same_on_the_split_model(both):
    one, split = both
    kw = {"kinds": ("mlp",), "samples": 3, "noise": 0.1, "window": 2, "seed": 0}
    a = trace_fact(one, "The Eiffel Tower is in", "Eiffel Tower", **kw)
    b = trace_fact(split, "The Eiffel Tower is in", "Eiffel Tower", **kw)
    assert a.p_clean == pytest.approx(b.p_clean, rel=1e-5)
    np.testing.assert_allclose(a.grids["mlp"], b.grids["mlp"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("method", "layers"), [("rome", [1]), ("memit", [0, 1])])
def test_edit_and_evaluation_are_the_same_on_the_split_model(both, corpus_path, method, layers):
    results = []
    for lm in both:
        session = EditSession(
            lm, method=method, layers=layers, corpus=[corpus_path], hparams=HPARAMS,
            allow_large_updates=True,
        )  # fmt: skip
        deltas = session.compute([FACT])
        with apply_deltas(lm.model, deltas):
            metrics = request_metrics(measure_request(lm, FACT, answer_tokens=4))
        results.append(({d.param: d.dense() for d in deltas}, metrics))
    (one_deltas, one_metrics), (split_deltas, split_metrics) = results
    assert set(one_deltas) == set(split_deltas)
    for name, delta in one_deltas.items():
        assert float(delta.norm()) > 0
        torch.testing.assert_close(split_deltas[name], delta, rtol=1e-4, atol=1e-6)
    assert split_metrics.keys() == one_metrics.keys()
    for key, value in one_metrics.items():
        assert split_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_an_offloaded_edit_layer_is_refused_with_the_fix(both, corpus_path):
    _, split = both
    with pytest.raises(FactEditError, match=r"layer 3 of the edit sit offloaded.*--max-memory"):
        EditSession(split, method="rome", layers=[3], corpus=[corpus_path], hparams=HPARAMS)


def test_spec_device_map_and_max_memory_are_checked_like_every_field(tmp_path):
    from factedit.errors import SpecError
    from factedit.spec import load_spec

    edit = {"subject": "Eiffel Tower", "prompt": "The {} is in", "target_new": "Rome"}
    good = tmp_path / "good.yaml"
    good.write_text(
        json.dumps(
            {"device_map": "auto", "max_memory": {0: "20GiB", "cpu": "60GiB"}, "edits": [edit]}
        )
    )
    spec = load_spec(good)
    assert spec.device_map == "auto" and spec.max_memory == {0: "20GiB", "cpu": "60GiB"}
    assert spec.to_dict()["device_map"] == "auto"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        json.dumps(
            {
                "device_map": {"model.layers.0": "gpu7"},
                "max_memory": {"cpu": "lots"},
                "edits": [edit],
            }
        )
    )
    with pytest.raises(SpecError) as caught:
        load_spec(bad)
    text = str(caught.value)
    assert "2 problems" in text and "device_map" in text and "'gpu7' is not a device" in text
    assert "max_memory" in text and "'lots' is not a size" in text


def test_cli_edit_apply_with_a_device_map(tmp_path, tiny, corpus_path, home):
    from typer.testing import CliRunner

    from factedit.cli.main import app

    directory = tmp_path / "tiny-llama"
    lm = tiny("llama")
    lm.model.save_pretrained(directory)
    lm.tokenizer.save_pretrained(directory)
    spec = tmp_path / "facts.yaml"
    spec.write_text(json.dumps({"layers": [1], "hparams": HPARAMS, "edits": [FACT.to_dict()]}))
    args = ["edit", "apply", str(spec), "--model", str(directory), "--corpus", str(corpus_path)]
    report = tmp_path / "r.json"
    done = CliRunner().invoke(
        app,
        [
            *args,
            "--device-map",
            json.dumps(DEVICE_MAP),
            "--json",
            str(report),
            "--allow-large-updates",
        ],
    )
    assert done.exit_code == 0, done.output
    assert json.loads(report.read_text())["edits"][0]["status"] == "applied"
    bad = CliRunner().invoke(app, [*args, "--device-map", "auto", "--max-memory", "cpu=lots"])
    assert bad.exit_code == 2
    assert [line for line in bad.output.splitlines() if line.startswith("error:")] == [
        "error: max_memory.cpu: 'lots' is not a size such as 20GiB"
    ]
