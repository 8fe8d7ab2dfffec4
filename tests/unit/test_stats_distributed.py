"""Statistics on torch.distributed: 2 gloo processes give the one-process C, and resume."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from factedit.stats import clear_memo, list_cached, moments_and_counts
from factedit.stats.collect import Accumulator, accumulate_layers
from proc_helpers import run_ranks, worker_env

N, SEQ, BATCH = 2000, 64, 2  # 32 sequences -> 16 batches of 2, the last one truncated
LAYERS = (0, 2)

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from pathlib import Path
    from transformers import PreTrainedTokenizerFast
    import factedit.stats.collection as collection
    from factedit.stats import moments_and_counts
    from factedit.testing import tiny_model

    rank, world, rendezvous, tok_dir, corpus, stop_after, out = sys.argv[1:8]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=int(rank),
                            world_size=int(world))
    lm = tiny_model("llama", PreTrainedTokenizerFast.from_pretrained(tok_dir))
    rounds = 0
    real = collection.accumulate_layers

    def counted(*args, **kwargs):
        global rounds
        for states in real(*args, **kwargs):
            rounds += 1
            yield states
            if rounds == int(stop_after):
                raise KeyboardInterrupt  # every rank at the same round, as Ctrl-C under torchrun

    collection.accumulate_layers = counted
    try:
        found = moments_and_counts(lm, {layers}, corpus=[Path(corpus)], n_tokens={n},
                                   seq_len={seq}, batch_size={batch}, checkpoint_every=2,
                                   show_progress=False)
    except KeyboardInterrupt:
        print(json.dumps({{"interrupted_after": rounds}}))
        sys.exit(130)
    torch.save({{k: c for k, (c, _) in found.items()}}, out)
    print(json.dumps({{"rounds": rounds}}))
    """
).format(layers=list(LAYERS), n=N, seq=SEQ, batch=BATCH)


@pytest.fixture
def group(tmp_path, bpe_tokenizer, home, corpus_path):
    """run(stop_after=0) -> [(returncode, stdout JSON, C per layer or None)] of 2 gloo ranks."""
    script, tok_dir = tmp_path / "rank.py", tmp_path / "tokenizer"
    script.write_text(WORKER)
    bpe_tokenizer.save_pretrained(tok_dir)
    env = worker_env(home)
    runs = [0]

    def run(stop_after: int = 0) -> list[tuple[int, dict, dict | None]]:
        runs[0] += 1
        rendezvous = tmp_path / f"rendezvous-{runs[0]}"
        outs = [tmp_path / f"C-{runs[0]}-{rank}.pt" for rank in range(2)]
        argv = [
            [
                str(rank),
                "2",
                str(rendezvous),
                str(tok_dir),
                str(corpus_path),
                str(stop_after),
                str(outs[rank]),
            ]
            for rank in range(2)
        ]
        results = []
        for (code, stdout, stderr), out in zip(run_ranks(script, argv, env=env), outs, strict=True):
            assert stdout.strip(), stderr[-3000:]
            found = torch.load(out) if out.exists() else None
            results.append((code, json.loads(stdout.strip().splitlines()[-1]), found))
        return results

    return run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_process(lm, corpus_path) -> dict[int, torch.Tensor]:
    torch.set_num_threads(1)
    found = moments_and_counts(
        lm, LAYERS, corpus=[corpus_path], n_tokens=N, seq_len=SEQ, batch_size=BATCH,
        show_progress=False, use_cache=False,
    )  # fmt: skip
    return {layer: c for layer, (c, _) in found.items()}


def test_two_ranks_split_the_batches_and_their_sums_add_up_to_one_process(tiny):
    lm = tiny("gpt2")
    sequences = torch.randint(0, 100, (7, 5))  # 4 batches of 2: rounds (0, 1), (2, 3)

    def keys(_lm, layers, batch):
        return {
            layer: batch.double().repeat_interleave(3, dim=1).reshape(-1, 3) for layer in layers
        }

    def run(rank: int, world: int) -> list[dict[int, Accumulator]]:
        start = {1: Accumulator()}
        return list(
            accumulate_layers(lm, [1], sequences, start, n_tokens=30, batch_size=2,
                              keys_fn=keys, rank=rank, world=world)
        )  # fmt: skip

    alone, first, second = run(0, 1), run(0, 2), run(1, 2)
    # 30 of the 35 token vectors: batches of 10, 10, 10 (the fourth batch is not needed)
    assert [s[1].count for s in alone] == [10, 20, 30]
    assert [(s[1].count, s[1].next_seq) for s in first] == [(20, 4), (30, 6)]
    assert [(s[1].count, s[1].next_seq) for s in second] == [(20, 4), (30, 6)]
    assert second[-1][1].total is not None  # rank 1 took batch 1 only
    combined = first[-1][1].total + second[-1][1].total
    torch.testing.assert_close(combined, alone[-1][1].total, rtol=1e-12, atol=0)


def test_two_gloo_processes_give_the_one_process_statistic(group, home, bpe_tokenizer, corpus_path):
    from factedit.testing import tiny_model

    results = group()
    assert [code for code, _, _ in results] == [0, 0]
    lm = tiny_model("llama", bpe_tokenizer)
    want = _one_process(lm, corpus_path)
    for _, report, found in results:
        assert report["rounds"] == 8  # 16 batches, 2 per round: each rank ran half
        for layer in LAYERS:
            torch.testing.assert_close(found[layer], want[layer], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(results[0][2][0], results[1][2][0], rtol=0, atol=0)
    # rank 0 alone wrote the cache: one entry per layer, no checkpoint left
    entries = list_cached()
    assert sorted(e["layer"] for e in entries) == list(LAYERS)
    assert not list((home / "stats").glob("*.partial.*"))


def test_an_interrupted_two_process_run_resumes_from_its_checkpoint(
    group, home, bpe_tokenizer, corpus_path
):
    from factedit.testing import tiny_model

    stopped = group(stop_after=5)  # checkpoints after rounds 2 and 4 (every 2 rounds)
    assert [code for code, _, _ in stopped] == [130, 130]
    partials = list((home / "stats").glob("*.partial.safetensors"))
    assert len(partials) == len(LAYERS)
    resumed = group()
    assert [code for code, _, _ in resumed] == [0, 0]
    assert [r["rounds"] for _, r, _ in resumed] == [4, 4]  # from round 4 on: 4 of 8 rounds
    want = _one_process(tiny_model("llama", bpe_tokenizer), corpus_path)
    for layer in LAYERS:
        torch.testing.assert_close(resumed[0][2][layer], want[layer], rtol=1e-6, atol=1e-7)
    assert not list((home / "stats").glob("*.partial.*"))


def test_torchrun_stats_collect_shares_the_corpus_and_rank_0_writes_once(
    home, tiny, corpus_path, tmp_path
):
    from factedit.models import load_model

    model_dir = tmp_path / "tiny-llama"
    lm = tiny("llama")
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    # rank 0 speaks, rank 1 turns itself quiet
    env = worker_env(home, OMP_NUM_THREADS="1", FACTEDIT_QUIET="0", COLUMNS="200")
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-port", str(_free_port()), "-m", "factedit", "stats", "collect"),
        *("--model", str(model_dir)),
        *("-l", "1", "-l", "2", "--corpus", str(corpus_path), "--tokens", "5000"),
    ]  # 5000 tokens: 20 sequences of 256, 3 batches of 8 -> rank 0 takes two, rank 1 one
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    streams = f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, streams
    assert done.stdout.count("tr(C)") == 1, streams  # one table: rank 0's
    assert done.stderr.count("statistics saved to") == 2, streams  # per layer, rank 0 only
    entries = list_cached()
    assert sorted(e["layer"] for e in entries) == [1, 2]
    torch.set_num_threads(1)
    reference = load_model(str(model_dir), device="cpu")
    clear_memo()
    options = {"corpus": [corpus_path], "n_tokens": 5000, "show_progress": False}
    alone = moments_and_counts(reference, [1, 2], use_cache=False, **options)
    cached = moments_and_counts(reference, [1, 2], **options)  # rank 0's entries
    assert len(list_cached()) == 2  # read, not collected again under another key
    for layer in (1, 2):
        torch.testing.assert_close(cached[layer][0], alone[layer][0], rtol=1e-6, atol=1e-7)
