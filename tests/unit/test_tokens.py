"""Subject spans via offsets and target tokenisation, on three tokenizer families."""

from __future__ import annotations

import pytest

from factedit.errors import SubjectNotFoundError
from factedit.tokens import locate_subject, prompt_token_ids, target_token_ids


def _subject_text(tok, sp) -> str:
    a, b = sp.subject_span
    return tok.decode(list(sp.input_ids[a:b])).strip()


@pytest.mark.parametrize("fixture", ["bpe_tokenizer", "sp_tokenizer"])
def test_subject_span_middle_and_start(fixture, request):
    tok = request.getfixturevalue(fixture)
    sp = locate_subject(tok, "Yesterday the Eiffel Tower was in", "Eiffel Tower")
    assert _subject_text(tok, sp) == "Eiffel Tower"
    start = locate_subject(tok, "Eiffel Tower is in", "Eiffel Tower")
    assert _subject_text(tok, start) == "Eiffel Tower"
    # the span starts right after BOS when the tokenizer adds one
    has_bos = prompt_token_ids(tok, "x")[0] == tok.bos_token_id and tok.bos_token_id is not None
    expected_start = 1 if has_bos and fixture == "sp_tokenizer" else 0
    assert start.subject_span[0] == expected_start


@pytest.mark.parametrize("fixture", ["bpe_tokenizer", "sp_tokenizer"])
def test_subject_twice_uses_template_position(fixture, request):
    tok = request.getfixturevalue(fixture)
    template = "Paris has a tower. {} is in"
    text = template.replace("{}", "Paris")
    sp = locate_subject(tok, text, "Paris", template=template)
    first = locate_subject(tok, "Paris has a tower.", "Paris")
    assert _subject_text(tok, sp) == "Paris"
    assert sp.subject_span[0] > first.subject_span[1]  # the second occurrence, not the first


def test_subject_absent_is_clear_error(bpe_tokenizer):
    with pytest.raises(SubjectNotFoundError, match="does not occur"):
        locate_subject(bpe_tokenizer, "The Louvre is in", "Eiffel Tower")


@pytest.mark.parametrize("fixture", ["bpe_tokenizer", "sp_tokenizer"])
def test_target_has_leading_space_and_no_bos(fixture, request):
    tok = request.getfixturevalue(fixture)
    ids = target_token_ids(tok, "Paris")
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    assert tok.decode(ids).strip() == "Paris"
    # concatenating prompt ids and target ids reproduces the text "... in Paris"
    prompt = prompt_token_ids(tok, "The tower is in")
    assert tok.decode(prompt + ids, skip_special_tokens=True) == "The tower is in Paris"


@pytest.mark.real
def test_gemma_tokenizer_spans(gemma):
    tok = gemma.tokenizer
    sp = locate_subject(tok, "The Eiffel Tower is located in the city of", "The Eiffel Tower")
    assert sp.input_ids[0] == tok.bos_token_id
    assert sp.subject_span == (1, 4)  # <bos> The ▁Eiffel ▁Tower
    assert tok.decode(target_token_ids(tok, "Paris")) == " Paris"
    assert len(target_token_ids(tok, "Paris")) == 1


@pytest.mark.real
def test_smollm_tokenizer_spans(smollm):
    tok = smollm.tokenizer
    sp = locate_subject(tok, "The Eiffel Tower is located in the city of", "Eiffel Tower")
    assert _subject_text(tok, sp) == "Eiffel Tower"
    assert sp.subject_span[0] == 1  # no BOS: "The" is token 0
    assert tok.decode(target_token_ids(tok, "Paris")) == " Paris"
