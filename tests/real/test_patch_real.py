"""A one-fact ROME patch on gemma-3-270m: under 64 KB, the same metrics applied from the file as
in process, a bit-exact revert with the originals kept, and a PEFT adapter that matches."""

from __future__ import annotations

import copy

import pytest
import torch

from factedit.evaluate import measure_request, request_metrics
from factedit.patch import Patch
from factedit.patch.peft_export import export_peft
from factedit.session import EditSession
from factedit.spec import load_spec

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def eiffel(request):
    return load_spec(request.config.rootpath / "configs" / "examples" / "eiffel.yaml").edits[0]


def test_a_rome_patch_is_small_exact_and_loads_as_a_lora_adapter(
    gemma, eiffel, wikitext_path, tmp_path
):
    original = {n: p.detach().clone() for n, p in gemma.model.named_parameters()}
    session = EditSession(gemma, method="rome", corpus=[wikitext_path])
    session.edit([eiffel])
    in_process = request_metrics(measure_request(gemma, eiffel, generation=False))
    ids = gemma.tokenizer(eiffel.rewrite_prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        edited_logits = gemma.model(ids).logits
    path = tmp_path / "eiffel.patch.safetensors"
    assert session.patch().save(tmp_path / "lean.patch.safetensors") < 64 * 1024
    size = session.patch(keep_original=True).save(path)
    assert size < 64 * 1024 + 2048 * 640 * 4  # and the original 2048 x 640 float32 matrix
    session.revert()

    patch = Patch.load(path)
    assert patch.info["edits"][0]["target_new"] == "Rome"
    patch.apply(gemma)
    from_file = request_metrics(measure_request(gemma, eiffel, generation=False))
    assert from_file == pytest.approx(in_process, abs=1e-6)
    assert from_file["es"] == 100.0
    assert Patch.load(path).revert(gemma) is True  # another handle: the kept originals
    for name, weight in gemma.model.named_parameters():
        assert torch.equal(weight, original[name]), name

    peft = pytest.importorskip("peft")
    export_peft(patch, tmp_path / "adapter")
    base = copy.deepcopy(gemma.model)  # PEFT rewires the modules it wraps: not the shared one
    adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    with torch.no_grad():
        served = adapted(input_ids=ids).logits
    assert torch.allclose(served, edited_logits, atol=1e-3, rtol=1e-4)
