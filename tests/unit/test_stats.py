"""Second-moment statistics: values, early stop, cache, resume, locking, corpus, CLI."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import factedit.paths
from factedit.errors import StatsError
from factedit.hooks import Trace, count_hooks
from factedit.stats import cache, clear_memo, collection, list_cached, resolve_corpus, second_moment
from factedit.stats.cache import key_id
from factedit.stats.corpus import iter_documents, token_sequences
from factedit.stats.moment import stats_key
from proc_helpers import worker_env

N, SEQ = 2000, 64  # 32 sequences -> 4 batches of 8, the last one truncated to 464 tokens


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads on a busy 2-core machine spin); the
    subprocess workers use one thread too, so their sums match in-process ones bit for bit."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def lm(tiny):
    return tiny("llama")


class CallCounter:
    """Counts forward calls of one module (through a Trace) and can fail or slow it."""

    def __init__(self, lm, name: str, *, raise_after: int | None = None, sleep: float = 0.0):
        self.calls, self.raise_after, self.sleep = 0, raise_after, sleep
        self.trace = Trace(lm.model, name, retain_output=False, edit_output=self._hit)

    def _hit(self, output, _name):
        if self.raise_after is not None and self.calls >= self.raise_after:
            raise KeyboardInterrupt
        self.calls += 1
        time.sleep(self.sleep)
        return output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.trace.close()


def collect(lm, corpus, **kw):
    kw = {"n_tokens": N, "seq_len": SEQ, "show_progress": False, **kw}
    return second_moment(lm, 1, corpus=[corpus], **kw)


def stats_files(home: Path) -> dict[str, bytes]:
    root = home / "stats"
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.suffix != ".lock"}


def complete_entries(home: Path) -> list[str]:
    root = home / "stats"
    return [p.name for p in root.glob("*.safetensors") if ".partial." not in p.name]


def reference_moment(lm, corpus, layer: int, n: int, seq_len: int, dtype: str) -> torch.Tensor:
    """Full forward passes on all sequences at once, keys stacked: Kᵀ K / n (float64)."""
    seqs = token_sequences(lm.tokenizer, [corpus], n, seq_len)
    with torch.no_grad(), Trace(lm.model, lm.arch.down_proj_name(layer), retain_input=True) as t:
        lm.model(input_ids=seqs)
    keys = t.input.reshape(-1, t.input.shape[-1])[:n].to(getattr(torch, dtype)).double()
    return keys.T @ keys / n


# ---- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "tokenizer", "dtype"),
    [
        ("llama", "bpe", "float32"),
        ("gpt2", "bpe", "float32"),
        ("gemma3_text", "sp", "float32"),
        ("gpt_neox", "sp", "float64"),
    ],
)
def test_matches_reference_and_is_psd(home, corpus_path, request, model_type, tokenizer, dtype):
    from factedit.testing import tiny_model

    tok = request.getfixturevalue(f"{tokenizer}_tokenizer")
    lm = tiny_model(model_type, tok)
    c = collect(lm, corpus_path, dtype=dtype)
    d_in = lm.arch.down_proj(1).weight.shape[0 if lm.arch.weight_is_in_out(1) else 1]
    assert c.shape == (d_in, d_in) and c.device.type == "cpu"
    assert c.dtype == getattr(torch, dtype)
    ref = reference_moment(lm, corpus_path, 1, N, SEQ, dtype)
    tol = 1e-5 if dtype == "float32" else 1e-10
    torch.testing.assert_close(c.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    assert torch.equal(c, c.T)
    assert torch.linalg.eigvalsh(c.double()).min() > -1e-6 * ref.abs().max()
    assert c.diagonal().min() > 0


def test_sequences_start_with_bos_only_when_the_tokenizer_adds_it(
    corpus_path, bpe_tokenizer, sp_tokenizer
):
    sp = token_sequences(sp_tokenizer, [corpus_path], 300, 32)
    assert sp.shape == (10, 32)
    assert (sp[:, 0] == sp_tokenizer.bos_token_id).all()
    assert (sp[:, 1:] != sp_tokenizer.bos_token_id).all()
    bpe = token_sequences(bpe_tokenizer, [corpus_path], 300, 32)
    first_doc = next(iter_documents([corpus_path]))
    expected = bpe_tokenizer(first_doc, add_special_tokens=False)["input_ids"]
    flat = bpe.flatten().tolist()
    assert flat[: len(expected)] == expected[: len(flat)]
    assert torch.equal(bpe, token_sequences(bpe_tokenizer, [corpus_path], 300, 32))


def test_forward_stops_after_the_edited_layer(home, lm, corpus_path):
    assert lm.arch.num_layers == 4
    with (
        CallCounter(lm, lm.arch.layer_name(0)) as below,
        CallCounter(lm, lm.arch.layer_name(2)) as above,
        CallCounter(lm, lm.arch.layer_name(3)) as last,
    ):
        collect(lm, corpus_path)
    assert below.calls == 4  # four batches
    assert above.calls == 0 and last.calls == 0
    assert count_hooks(lm.model) == 0


def test_corpus_smaller_than_n_tokens_is_a_stats_error(home, lm, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("A short corpus .\n\nWith two documents .\n")
    with pytest.raises(StatsError, match="fewer than the 2000"):
        collect(lm, small)


# ---- cache -------------------------------------------------------------------------------


def test_cache_hit_does_not_run_the_model(home, lm, corpus_path):
    first = collect(lm, corpus_path)
    with CallCounter(lm, lm.arch.layer_name(0)) as counter:
        memo_hit = collect(lm, corpus_path)
        clear_memo()
        disk_hit = collect(lm, corpus_path)
    assert counter.calls == 0
    assert torch.equal(first, memo_hit) and torch.equal(first, disk_hit)
    memo_hit.zero_()  # callers get a copy
    assert torch.equal(collect(lm, corpus_path), first)
    [row] = list_cached()
    assert row["layer"] == 1 and row["n_tokens"] == N and row["bytes"] > 0
    assert row["computed_by"] == os.getpid()


def test_cache_key_changes_with_what_determines_c(lm, tmp_path):
    a, b, a_copy = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "sub" / "a2.txt"
    a.write_text("one text")
    b.write_text("another text")
    a_copy.parent.mkdir()
    a_copy.write_text("one text")
    base = key_id(stats_key(lm, 1, [a], N, SEQ, "float32"))
    assert key_id(stats_key(lm, 1, [a_copy], N, SEQ, "float32")) == base
    for changed in (
        stats_key(lm, 2, [a], N, SEQ, "float32"),
        stats_key(lm, 1, [b], N, SEQ, "float32"),
        stats_key(lm, 1, [a], N + 1, SEQ, "float32"),
        stats_key(lm, 1, [a], N, SEQ, "float64"),
        stats_key(lm, 1, [a], N, SEQ // 2, "float32"),
    ):
        assert key_id(changed) != base


def test_corrupt_entry_is_recomputed_with_a_warning(home, lm, corpus_path, monkeypatch):
    first = collect(lm, corpus_path)
    [name] = complete_entries(home)
    path = home / "stats" / name
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data) - 32):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    warnings: list[str] = []
    monkeypatch.setattr(cache, "warn", warnings.append)
    clear_memo()
    with CallCounter(lm, lm.arch.layer_name(0)) as counter:
        again = collect(lm, corpus_path)
    assert counter.calls == 4
    assert len(warnings) == 1 and "corrupt" in warnings[0]
    assert torch.equal(again, first)
    clear_memo()
    assert torch.equal(collect(lm, corpus_path), first) and len(warnings) == 1


def test_interrupted_collection_resumes_bit_identically(home, lm, corpus_path, monkeypatch):
    with (
        pytest.raises(KeyboardInterrupt),
        CallCounter(lm, lm.arch.layer_name(0), raise_after=2),
    ):
        collect(lm, corpus_path, checkpoint_every=100)  # the interrupt itself checkpoints
    partials = list((home / "stats").glob("*.partial.safetensors"))
    assert len(partials) == 1
    assert complete_entries(home) == [] and list_cached() == []
    with CallCounter(lm, lm.arch.layer_name(0)) as counter:
        resumed = collect(lm, corpus_path)
    assert counter.calls == 2  # only the two batches left
    assert not partials[0].exists()

    monkeypatch.setenv("FACTEDIT_HOME", str(home.parent / "fresh"))
    clear_memo()
    assert torch.equal(resumed, collect(lm, corpus_path))


def test_enospc_is_a_stats_error_and_leaves_the_cache_intact(home, lm, corpus_path, monkeypatch):
    other = collect(lm, corpus_path, n_tokens=500)
    with (
        pytest.raises(KeyboardInterrupt),
        CallCounter(lm, lm.arch.layer_name(0), raise_after=1),
    ):
        collect(lm, corpus_path)
    before = stats_files(home)
    assert len(before) == 3  # other entry (tensor + sidecar) and one partial

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(factedit.paths.os, "fsync", no_space)
    warnings: list[str] = []
    monkeypatch.setattr(collection, "warn", warnings.append)
    with pytest.raises(StatsError, match=r"cannot write .*\.safetensors.*No space left"):
        collect(lm, corpus_path, checkpoint_every=1)  # checkpoints fail too: warned, skipped
    assert len(warnings) == 1 and "checkpoints disabled" in warnings[0]
    assert stats_files(home) == before
    assert not [p for p in (home / "stats").iterdir() if p.name.endswith(".tmp")]

    monkeypatch.undo()
    monkeypatch.setenv("FACTEDIT_HOME", str(home))
    clear_memo()
    assert torch.equal(collect(lm, corpus_path, n_tokens=500), other)
    collect(lm, corpus_path)  # resumes from the untouched partial
    assert len(complete_entries(home)) == 2
    assert not list((home / "stats").glob("*.partial.safetensors"))


# ---- processes: SIGTERM and concurrent collection ----------------------------------------

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from pathlib import Path
    import torch
    from transformers import PreTrainedTokenizerFast
    from factedit.hooks import Trace
    from factedit.stats import second_moment
    from factedit.testing import tiny_model

    tok_dir, corpus, sleep = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    every = int(sys.argv[4])
    torch.set_num_threads(1)
    lm = tiny_model("llama", PreTrainedTokenizerFast.from_pretrained(tok_dir))
    calls = 0

    def slow(output, _name):
        global calls
        calls += 1
        print(f"batch {{calls}}", file=sys.stderr, flush=True)
        time.sleep(sleep)
        return output

    with Trace(lm.model, lm.arch.layer_name(0), retain_output=False, edit_output=slow):
        c = second_moment(lm, 1, corpus=[corpus], n_tokens={n}, seq_len={seq}, batch_size=2,
                          checkpoint_every=every, show_progress=False)
    digest = hashlib.sha256(c.numpy().tobytes()).hexdigest()
    print(json.dumps({{"pid": os.getpid(), "calls": calls, "sha256": digest}}))
    """
).format(n=N, seq=SEQ)


@pytest.fixture
def worker(tmp_path, bpe_tokenizer, home):
    """Command line of a subprocess that collects layer 1's C with a slowed layer 0."""
    script, tok_dir = tmp_path / "worker.py", tmp_path / "tokenizer"
    script.write_text(WORKER)
    bpe_tokenizer.save_pretrained(tok_dir)
    env = worker_env(home)

    def start(
        corpus: Path, sleep: float, stderr=subprocess.PIPE, checkpoint_every: int = 1
    ) -> subprocess.Popen:
        cmd = [sys.executable, str(script), str(tok_dir), str(corpus), str(sleep)]
        cmd.append(str(checkpoint_every))
        quiet = "1" if stderr is subprocess.PIPE else "0"  # a log file gets the info lines
        return subprocess.Popen(
            cmd, env={**env, "FACTEDIT_QUIET": quiet}, stdout=subprocess.PIPE, stderr=stderr
        )

    return start


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the worker")
        time.sleep(0.05)


def test_sigterm_leaves_a_partial_that_resumes_bit_identically(
    home, worker, corpus_path, bpe_tokenizer, monkeypatch, tmp_path
):
    log = tmp_path / "worker.log"

    def partials() -> list[Path]:
        return list((home / "stats").glob("*.partial.safetensors"))

    with log.open("wb") as err:
        # 16 batches of 2 sequences, ~5 s; no periodic checkpoint: only SIGTERM's can save
        proc = worker(corpus_path, 0.3, stderr=err, checkpoint_every=1000)
        _wait_for(lambda: "batch 4" in log.read_text(), proc)
        assert partials() == []
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode != 0
    assert len(partials()) == 1, log.read_text()[-2000:]
    assert complete_entries(home) == []

    from factedit.testing import tiny_model

    lm = tiny_model("llama", bpe_tokenizer)
    with CallCounter(lm, lm.arch.layer_name(0)) as counter:
        resumed = collect(lm, corpus_path, batch_size=2)
    assert 0 < counter.calls < 16
    monkeypatch.setenv("FACTEDIT_HOME", str(home.parent / "fresh"))
    clear_memo()
    assert torch.equal(resumed, collect(lm, corpus_path, batch_size=2))


def test_concurrent_collections_compute_once(home, worker, corpus_path, bpe_tokenizer):
    procs = [worker(corpus_path, 0.1) for _ in range(2)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        results.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert sorted(r["calls"] for r in results) == [0, 16]
    assert results[0]["sha256"] == results[1]["sha256"]
    [row] = list_cached()
    assert row["computed_by"] == next(r["pid"] for r in results if r["calls"])

    from factedit.testing import tiny_model

    mine = collect(tiny_model("llama", bpe_tokenizer), corpus_path, batch_size=2)
    assert hashlib.sha256(mine.numpy().tobytes()).hexdigest() == results[0]["sha256"]


def test_a_waiting_process_reads_the_entry_the_lock_holder_wrote(
    home, worker, corpus_path, lm, tmp_path
):
    entry = cache.Entry.for_key(stats_key(lm, 1, [corpus_path], N, SEQ, "float32"))
    log = tmp_path / "worker.log"
    with cache.locked(entry), log.open("wb") as err:
        proc = worker(corpus_path, 0.0, stderr=err)
        _wait_for(lambda: "waiting for another process" in log.read_text(), proc)
        mine = collect(lm, corpus_path, batch_size=2, use_cache=False)
        cache.save(entry, mine, {"computed_by": os.getpid()})
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log.read_text()[-2000:]
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["calls"] == 0
    assert result["sha256"] == hashlib.sha256(mine.numpy().tobytes()).hexdigest()


# ---- corpus ------------------------------------------------------------------------------


def test_resolve_corpus_explicit_and_env(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("x")
    b.write_text('{"text": "y"}\n')
    assert resolve_corpus([str(a), b]) == [a, b]
    monkeypatch.setenv("FACTEDIT_CORPUS", os.pathsep.join([str(a), str(b)]))
    assert resolve_corpus(None) == [a, b]
    with pytest.raises(StatsError, match="not found"):
        resolve_corpus([tmp_path / "missing.txt"])


def test_resolve_corpus_never_falls_back_to_the_wikitext_beside_the_repository(
    home, monkeypatch, lm
):
    monkeypatch.delenv("FACTEDIT_CORPUS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the order: tests/unit/test_corpus_fallback.py
    paths = resolve_corpus(None, lm=lm, n_tokens=200, seq_len=32, show_progress=False)
    assert [p.parent for p in paths] == [home / "corpora"]  # sampled from the model


def test_resolve_corpus_without_any_corpus_says_how_to_give_one(home, monkeypatch):
    monkeypatch.delenv("FACTEDIT_CORPUS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StatsError) as info:
        resolve_corpus(None)  # no WikiText-103 offline, and no model to sample from
    message = str(info.value)
    assert "--corpus" in message and "FACTEDIT_CORPUS" in message and "offline" in message
    assert "pip install datasets" in message and "--corpus model" in message


def test_documents_from_text_and_jsonl(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(
        " = Title = \r\n Para one .\r\n Para two .\r\n\r\n Next doc .\r\n = = Sub = = \r\n"
    )
    assert list(iter_documents([text])) == [
        "= Title =\nPara one .\nPara two .",
        "Next doc .\n= = Sub = =",
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "first"}\n\n{"text": "second", "id": 2}\n')
    docs = list(iter_documents([jsonl, text]))
    assert docs[:3] == ["first", "second", "= Title =\nPara one .\nPara two ."]
    jsonl.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(StatsError, match=r"d\.jsonl:2"):
        list(iter_documents([jsonl]))


def test_jsonl_corpus_collects(home, lm, tmp_path, corpus_path):
    lines = corpus_path.read_text(encoding="utf-8").splitlines()[:200]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines if line.strip()))
    c = collect(lm, jsonl, n_tokens=500)
    assert c.shape == (128, 128) and torch.isfinite(c).all()


def test_bad_arguments_are_stats_errors(home, lm, corpus_path):
    with pytest.raises(StatsError, match="float16"):
        collect(lm, corpus_path, dtype="float16")
    with pytest.raises(StatsError):
        collect(lm, corpus_path, n_tokens=0)


# ---- CLI ---------------------------------------------------------------------------------


def test_cli_collect_and_list(home, lm, corpus_path, tmp_path):
    import typer
    from typer.testing import CliRunner

    from factedit.cli.stats import stats_app

    model_dir = tmp_path / "tiny-llama"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    app = typer.Typer()
    app.add_typer(stats_app, name="stats")
    runner = CliRunner()
    args = ["stats", "collect", "--model", str(model_dir), "--corpus", str(corpus_path)]
    result = runner.invoke(
        app, [*args, "--layer", "1", "--layer", "2", "--tokens", "300", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "model.layers.1.mlp.down_proj" in result.stdout
    assert "model.layers.2.mlp.down_proj" in result.stdout
    rows = list_cached()
    assert sorted(r["layer"] for r in rows) == [1, 2]
    listed = runner.invoke(app, ["stats", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "tiny-llama" in listed.stdout and "300" in listed.stdout
    assert "synthetic-wikitext.txt" in listed.stdout  # the corpus
    layer_1 = next(r for r in rows if r["layer"] == 1)
    assert f"{layer_1['condition']:.3g}" in listed.stdout  # the conditioning
    shown = runner.invoke(app, ["stats", "show", Path(layer_1["file"]).name[:10]])
    assert shown.exit_code == 0, shown.output
    assert "model.layers.1.mlp.down_proj" in shown.stdout and "condition" in shown.stdout
    assert str(layer_1["eig_max"])[:6] in shown.stdout
    unknown = runner.invoke(app, ["stats", "show", "zzzz"])
    assert unknown.exit_code == 2 and "no cached statistic" in unknown.stderr

    bad = runner.invoke(app, [*args, "--layer", "1", "--dtype-stats", "float16"])
    assert bad.exit_code == 2 and "float32 or float64" in bad.stderr
    missing = runner.invoke(app, [*args, "--layer", "9"])
    assert missing.exit_code == 2 and "layer 9" in missing.stderr


# ---- a real model ------------------------------------------------------------------------


@pytest.mark.real
def test_real_gemma_matches_a_full_pass(gemma, wikitext_path):
    layer = gemma.default_layer
    c = second_moment(
        gemma, layer, corpus=[wikitext_path], n_tokens=600, seq_len=128, use_cache=False,
        show_progress=False,
    )  # fmt: skip
    assert c.shape == (2048, 2048) and torch.isfinite(c).all()
    ref = reference_moment(gemma, wikitext_path, layer, 600, 128, "float32")
    torch.testing.assert_close(c.double(), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
