"""Generations are shown as text: control tokens and modality markers are left out."""

from __future__ import annotations

import pytest
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast

from factedit.testing import byte_bpe_tokenizer
from factedit.tokens import control_token_ids, visible_text


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=byte_bpe_tokenizer()._tokenizer)
    tok.add_special_tokens({"eos_token": "<|endoftext|>"})
    # As in Gemma 3: a control token flagged special, an image marker and an HTML tag that
    # are plain user-defined tokens.
    tok.add_tokens([AddedToken("<start_of_turn>", special=True)], special_tokens=True)
    tok.add_tokens([AddedToken("<start_of_image>", special=False), AddedToken("<b>")])
    return tok


def test_control_tokens_and_modality_markers_are_hidden_text_is_kept(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(
        ["<start_of_image>", "<start_of_turn>", "<|endoftext|>", "<b>"]
    )
    soi, turn, eos, bold = ids
    assert {soi, turn, eos} <= control_token_ids(tokenizer)
    assert bold not in control_token_ids(tokenizer)
    paris = tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    shown = visible_text(tokenizer, [soi, *paris, turn, soi, bold, eos])
    assert shown == " Paris<b>"
    # the plain decode shows the marker literally: what the helper exists for
    assert "<start_of_image>" in tokenizer.decode([soi, *paris], skip_special_tokens=True)
