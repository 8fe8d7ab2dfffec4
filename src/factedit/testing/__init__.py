"""Tiny offline tokenizers and random models for tests (no hub, no downloads).

``byte_bpe_tokenizer()`` is GPT-2 style byte-level BPE; ``sentencepiece_tokenizer()`` is
Llama style (metaspace "▁", BOS prepended). Both have a 1000-token vocabulary learnt from the
synthetic text of :mod:`factedit.testing.corpus`, which ships with the package: the same
tokens on every machine, with or without the benchmark data. ``tiny_model(model_type)``
builds a random model of any mapped architecture with a few hundred thousand parameters.
``collapsing_delta(lm)`` and ``small_delta(lm)`` are a model-destroying and a benign update
for the fluency probe.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from factedit.delta import WeightDelta
from factedit.models.arch import resolve_architecture
from factedit.models.loading import LoadedModel
from factedit.testing.corpus import training_lines

TINY_MODEL_TYPES = (
    "gpt2",
    "gptj",
    "gpt_neox",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
)


@functools.cache
def byte_bpe_tokenizer(*, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """GPT-2 style byte-level BPE (leading spaces inside tokens, no BOS added), trained on
    :func:`factedit.testing.corpus.training_lines`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


@functools.cache
def sentencepiece_tokenizer(*, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Llama/SentencePiece style: "▁" marks spaces, "<s>" is prepended to every prompt;
    trained on :func:`factedit.testing.corpus.training_lines`."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first", split=True
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(training_lines(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )


def tiny_config(
    model_type: str,
    vocab_size: int,
    *,
    layers: int = 4,
    hidden: int = 64,
    bos_token_id: int = 0,
    eos_token_id: int = 0,
):
    """A config of ``model_type`` with a few hundred thousand parameters."""
    common = dict(
        vocab_size=vocab_size,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    if model_type == "gpt2":
        kw = dict(n_embd=hidden, n_layer=layers, n_head=4, n_positions=256, n_inner=2 * hidden)
    elif model_type == "gptj":
        kw = dict(n_embd=hidden, n_layer=layers, n_head=4, n_positions=256, rotary_dim=8)
    elif model_type == "gpt_neox":
        kw = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=2 * hidden,
            max_position_embeddings=256,
        )
    else:
        kw = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * hidden,
            max_position_embeddings=256,
            head_dim=hidden // 4,
        )
    return AutoConfig.for_model(model_type, **common, **kw)


def tiny_model(
    model_type: str, tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, layers: int = 4
) -> LoadedModel:
    """A random ``LoadedModel`` of ``model_type`` (eval mode, gradients off, float32)."""
    config = tiny_config(
        model_type,
        len(tokenizer),
        layers=layers,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        arch=resolve_architecture(model),
        name=f"tiny-{model_type}",
        base_identity=f"tiny:{model_type}:{seed}:{layers}",
        default_layer=1,
    )


def collapsing_delta(lm: LoadedModel, scale: float = 100.0) -> WeightDelta:
    """A rank-one update that makes the model say the same thing at every position.

    It adds ``scale * u`` (one fixed random direction) to every token's input embedding, so
    after the first norm every position carries nearly the same vector and the model predicts
    the same next token everywhere: the "collapsed model" the fluency probe must catch.
    """
    name = f"{lm.arch.paths.embed}.weight"
    vocab, hidden = lm.model.get_parameter(name).shape
    u = torch.randn(hidden, 1, generator=torch.Generator().manual_seed(0))
    return WeightDelta(name, torch.full((vocab, 1), scale), u, {"test": "collapse"})


def small_delta(lm: LoadedModel, layer: int = 1, scale: float = 1e-3) -> WeightDelta:
    """A tiny random rank-one update of ``layer``'s MLP down-projection (a benign edit)."""
    name = lm.arch.down_proj_weight_name(layer)
    rows, cols = lm.model.get_parameter(name).shape
    g = torch.Generator().manual_seed(1)
    left = torch.randn(rows, 1, generator=g) * scale
    return WeightDelta(name, left, torch.randn(cols, 1, generator=g), {"test": "small"})
