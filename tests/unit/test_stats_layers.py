"""Statistics of several layers in one pass: bit-identical to one layer at a time, one forward
per batch that stops after the highest layer, cache shared with the one-layer path, resume."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from test_stats import SEQ, CallCounter, N, complete_entries  # the one-layer tests' helpers

from factedit.errors import StatsError
from factedit.hooks import Trace, count_hooks
from factedit.stats import cache, clear_memo, collection, moments_and_counts
from factedit.stats.collect import Accumulator, accumulate, accumulate_layers
from factedit.stats.corpus import token_sequences
from factedit.stats.moment import moment_and_count, stats_key

LAYERS = [1, 2, 3]  # of a 6-layer tiny model: layers 4 and 5 lie above the window
BATCHES = 4  # N tokens in sequences of SEQ, 8 per batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def lm(tiny):
    return tiny("llama", layers=6)


def collect_layers(lm, corpus, layers=LAYERS, **kw) -> dict[int, torch.Tensor]:
    kw = {"n_tokens": N, "seq_len": SEQ, "show_progress": False, **kw}
    result = moments_and_counts(lm, layers, corpus=[corpus], **kw)
    assert all(n == kw["n_tokens"] for _, n in result.values())
    return {layer: c for layer, (c, _) in result.items()}


def collect_one(lm, corpus, layer: int, **kw) -> torch.Tensor:
    kw = {"n_tokens": N, "seq_len": SEQ, "show_progress": False, **kw}
    c, n = moment_and_count(lm, layer, corpus=[corpus], **kw)
    assert n == kw["n_tokens"]
    return c


def one_layer_loop(lm, corpus, layer: int, dtype: str) -> torch.Tensor:
    """The one-layer collection written out independently: forward passes stopped right after
    ``layer``'s down-projection, batches of 8, float64 running sum -> C [d_in, d_in]."""
    seqs = token_sequences(lm.tokenizer, [corpus], N, SEQ)
    acc, total, count = getattr(torch, dtype), None, 0
    for start in range(0, len(seqs), 8):
        if count == N:
            break
        name = lm.arch.down_proj_name(layer)
        with torch.no_grad(), Trace(lm.model, name, retain_input=True, stop=True) as t:
            lm.model(input_ids=seqs[start : start + 8], use_cache=False)
        keys = t.input.reshape(-1, t.input.shape[-1])[: N - count].to(acc)
        moment = (keys.T @ keys).to(torch.float64)
        total = moment if total is None else total + moment
        count += keys.shape[0]
    return (total / count).to(acc)


@contextlib.contextmanager
def forward_starts(module: torch.nn.Module):
    """Counts the calls of ``module`` that start (a forward pre-hook, removed on exit)."""
    calls = []
    handle = module.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def partial_files(home: Path) -> list[Path]:
    return sorted((home / "stats").glob("*.partial.safetensors"))


# ---- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "dtype"),
    [("llama", "float32"), ("llama", "float64"), ("gpt2", "float32"), ("gemma3_text", "float64")],
)
def test_several_layers_equal_one_layer_at_a_time_bit_for_bit(
    home, tiny, corpus_path, model_type, dtype
):
    lm = tiny(model_type, layers=6)
    together = collect_layers(lm, corpus_path, dtype=dtype)
    assert list(together) == LAYERS
    for layer in LAYERS:
        alone = collect_one(lm, corpus_path, layer, dtype=dtype, use_cache=False)
        assert together[layer].dtype == getattr(torch, dtype)
        assert torch.equal(together[layer], alone), layer
        assert torch.equal(together[layer], one_layer_loop(lm, corpus_path, layer, dtype))
    assert not torch.equal(together[1], together[3])
    for layer in LAYERS:  # the sidecar of each entry, as the one-layer path writes it
        key = stats_key(lm, layer, [corpus_path], N, SEQ, dtype)
        sidecar = json.loads(cache.Entry.for_key(key).sidecar_path.read_text())
        assert sidecar["key"]["layer"] == layer and sidecar["n_tokens"] == N
        assert sidecar["condition"] > 1 and sidecar["batch_size"] == 8
        assert sidecar["computed_by"] > 0 and sidecar["corpus_kind"] == "files"


def test_one_forward_per_batch_that_stops_after_the_highest_layer(home, lm, corpus_path):
    with (
        forward_starts(lm.model) as forwards,
        CallCounter(lm, lm.arch.layer_name(0)) as first,
        CallCounter(lm, lm.arch.layer_name(2)) as below_highest,
        CallCounter(lm, lm.arch.down_proj_name(3)) as highest,
        forward_starts(lm.arch.layers()[4]) as above,
        forward_starts(lm.arch.layers()[5]) as last,
    ):
        collect_layers(lm, corpus_path)
    assert len(forwards) == BATCHES
    assert first.calls == below_highest.calls == highest.calls == BATCHES
    assert above == [] and last == []
    assert count_hooks(lm.model) == 0
    assert len(complete_entries(home)) == len(LAYERS)


def test_layers_are_sorted_deduplicated_and_checked(home, lm, corpus_path):
    with forward_starts(lm.model) as forwards:
        result = collect_layers(lm, corpus_path, layers=[3, 1, 3, 2])
    assert list(result) == LAYERS and len(forwards) == BATCHES
    with pytest.raises(StatsError, match="no layer"):
        collect_layers(lm, corpus_path, layers=[])
    with pytest.raises(Exception, match="9"):
        collect_layers(lm, corpus_path, layers=[1, 9])


# ---- cache -------------------------------------------------------------------------------


def test_a_layer_cached_by_the_one_layer_path_is_not_recomputed(home, lm, corpus_path):
    top = collect_one(lm, corpus_path, 3)  # the highest of the window
    clear_memo()  # from disk, not only from the memo
    with (
        CallCounter(lm, lm.arch.layer_name(0)) as first,
        CallCounter(lm, lm.arch.layer_name(3)) as layer3,
    ):
        together = collect_layers(lm, corpus_path)
    assert first.calls == BATCHES  # one pass for layers 1 and 2...
    assert layer3.calls == 0  # ...that ends after layer 2
    assert torch.equal(together[3], top)
    for layer in (1, 2):
        assert torch.equal(together[layer], collect_one(lm, corpus_path, layer, use_cache=False))
    with CallCounter(lm, lm.arch.layer_name(0)) as none:
        memo = collect_layers(lm, corpus_path)
        clear_memo()
        disk = [collect_one(lm, corpus_path, layer) for layer in LAYERS]
    assert none.calls == 0
    for layer, c in zip(LAYERS, disk, strict=True):
        assert torch.equal(memo[layer], c) and torch.equal(together[layer], c)
    memo[1].zero_()  # callers get copies
    assert torch.equal(collect_layers(lm, corpus_path)[1], together[1])


def test_locks_in_layer_order_and_the_cache_read_again_under_them(
    home, lm, corpus_path, monkeypatch
):
    order: list[int] = []
    real_locked = cache.locked
    written = torch.eye(128) * 7  # what "another process" saves for layer 2 while we wait

    @contextlib.contextmanager
    def locked(entry):
        with real_locked(entry):
            order.append(entry.key["layer"])
            if entry.key["layer"] == 3:
                other = cache.Entry.for_key(stats_key(lm, 2, [corpus_path], N, SEQ, "float32"))
                cache.save(other, written, {"computed_by": -1})
            yield

    monkeypatch.setattr(cache, "locked", locked)
    with CallCounter(lm, lm.arch.layer_name(4)) as above:
        result = collect_layers(lm, corpus_path, layers=[3, 2, 1])
    assert order == LAYERS and above.calls == 0
    assert torch.equal(result[2], written)
    assert torch.equal(result[1], collect_one(lm, corpus_path, 1, use_cache=False))


# ---- interruption and resume -------------------------------------------------------------


def test_interrupted_collection_of_several_layers_resumes_bit_identically(
    home, lm, corpus_path, monkeypatch
):
    with (
        pytest.raises(KeyboardInterrupt),
        CallCounter(lm, lm.arch.layer_name(0), raise_after=2),
    ):
        collect_layers(lm, corpus_path, checkpoint_every=100)  # the interrupt checkpoints
    partials = partial_files(home)
    assert len(partials) == len(LAYERS) and complete_entries(home) == []
    states = {cache.load_partial(cache.Entry(home / "stats", k)) for k in _keys(lm, corpus_path)}
    assert len({(s.count, s.next_seq) for s in states}) == 1
    with CallCounter(lm, lm.arch.layer_name(0)) as counter:
        resumed = collect_layers(lm, corpus_path)
    assert counter.calls == BATCHES - 2  # only the batches left
    assert partial_files(home) == [] and len(complete_entries(home)) == len(LAYERS)

    monkeypatch.setenv("FACTEDIT_HOME", str(home.parent / "fresh"))
    clear_memo()
    fresh = collect_layers(lm, corpus_path)
    for layer in LAYERS:
        assert torch.equal(resumed[layer], fresh[layer])
        assert torch.equal(resumed[layer], one_layer_loop(lm, corpus_path, layer, "float32"))


def test_checkpoints_at_different_points_start_over_from_zero(home, lm, corpus_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt), CallCounter(lm, lm.arch.layer_name(0), raise_after=2):
        collect_layers(lm, corpus_path, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt), CallCounter(lm, lm.arch.layer_name(0), raise_after=1):
        collect_one(lm, corpus_path, 2)  # resumes layer 2 alone, one batch further
    assert len(partial_files(home)) == len(LAYERS)
    said: list[str] = []
    monkeypatch.setattr(collection, "info", said.append)
    with CallCounter(lm, lm.arch.layer_name(0)) as counter:
        result = collect_layers(lm, corpus_path)
    assert counter.calls == BATCHES
    assert any("not all at the same point" in s and "from zero" in s for s in said), said
    assert not any(s.startswith("resuming") for s in said)
    assert partial_files(home) == []
    for layer in LAYERS:
        assert torch.equal(result[layer], one_layer_loop(lm, corpus_path, layer, "float32"))


def _keys(lm, corpus: Path) -> list[dict]:
    return [stats_key(lm, layer, [corpus], N, SEQ, "float32") for layer in LAYERS]


# ---- the loop ----------------------------------------------------------------------------


def test_accumulate_keeps_its_one_layer_keys_fn(lm, corpus_path):
    """``accumulate`` with an injected one-layer ``keys_fn`` (as scripts/bench_stats.py uses
    it, a full pass) sums the same as the multi-layer loop."""
    seqs = token_sequences(lm.tokenizer, [corpus_path], N, SEQ)
    seen: list[int] = []

    def full_pass(lm, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
        seen.append(layer)
        with (
            torch.no_grad(),
            Trace(lm.model, lm.arch.down_proj_name(layer), retain_input=True) as t,
        ):
            lm.model(input_ids=input_ids, use_cache=False)
        return t.input.reshape(-1, t.input.shape[-1])

    states = list(accumulate(lm, 2, seqs, Accumulator(), n_tokens=N, keys_fn=full_pass))
    assert seen == [2] * BATCHES and [s.count for s in states] == [512, 1024, 1536, N]
    together = list(
        accumulate_layers(lm, LAYERS, seqs, dict.fromkeys(LAYERS, Accumulator()), n_tokens=N)
    )
    assert len(together) == BATCHES and states[-1].next_seq == together[-1][2].next_seq
    assert torch.equal(states[-1].total, together[-1][2].total)
    assert not torch.equal(together[-1][1].total, together[-1][2].total)
