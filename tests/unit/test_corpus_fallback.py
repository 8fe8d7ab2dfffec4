"""Where C's corpus comes from when none is given: explicit > env > WikiText-103 > the model.

The network is never touched: ``datasets`` is a fake module whose ``load_dataset`` streams the
lines of the synthetic ``corpus_path`` file. Sampling runs on a tiny random model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from factedit.errors import StatsError
from factedit.stats import choice, clear_memo, corpus, sampled, second_moment
from factedit.stats.choice import check_corpus, choose_corpus
from factedit.stats.corpus import corpus_digest, iter_documents, resolve_corpus, token_sequences
from factedit.stats.sampled import SampleSettings, sampled_corpus

SRC = Path(__file__).resolve().parents[2] / "src"
SMALL = SampleSettings(doc_tokens=24, batch_size=4)  # a few short documents: fast


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch, one_thread):
    """A fresh FACTEDIT_HOME, no $FACTEDIT_CORPUS, offline, no failed downloads remembered."""
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACTEDIT_CORPUS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(corpus, "_DOWNLOAD_FAILED", {})
    clear_memo()
    yield tmp_path / "home"
    clear_memo()


@pytest.fixture
def lm(tiny):
    return tiny("llama")


class FakeDatasets:
    """Installs a fake ``datasets`` module: ``load_dataset`` streams ``lines`` (or raises)."""

    def __init__(self, monkeypatch, lines: list[str], error: Exception | None = None):
        self.calls: list[tuple[tuple, dict]] = []
        self.lines, self.error = lines, error
        module = types.ModuleType("datasets")
        module.load_dataset = self.load_dataset
        monkeypatch.setitem(sys.modules, "datasets", module)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def load_dataset(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return ({"text": line} for line in self.lines)


def wikitext_lines(path: Path) -> list[str]:
    """The file as HF's wikitext records: each line with its newline, blank lines as ""."""
    return [line + "\n" if line.strip() else "" for line in path.read_text().splitlines()]


def sample(lm, n_tokens=150, seq_len=32, settings=SMALL) -> Path:
    return sampled_corpus(
        lm, n_tokens=n_tokens, seq_len=seq_len, settings=settings, show_progress=False
    )


# ---- the order ---------------------------------------------------------------------------


def test_order_explicit_then_env_then_wikitext_then_model(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a")
    b.write_text("b")
    monkeypatch.setenv("FACTEDIT_CORPUS", str(b))
    FakeDatasets(monkeypatch, [])  # online, datasets importable
    assert choose_corpus([a]).paths == (a,) and choose_corpus([a]).source == "--corpus"
    assert choose_corpus(None).paths == (b,) and choose_corpus(None).kind == "files"
    monkeypatch.delenv("FACTEDIT_CORPUS")
    online = choose_corpus(None)
    assert online.kind == "wikitext" and online.download
    assert online.paths[0].parent == choice.cache_dir("corpora")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    offline = choose_corpus(None)
    assert offline.kind == "model" and "HF_DATASETS_OFFLINE" in offline.reason
    assert choose_corpus(["model"]).kind == "model"  # explicit, also when online
    monkeypatch.setenv("FACTEDIT_CORPUS", "model")
    assert choose_corpus(None).kind == "model" and choose_corpus([a]).paths == (a,)


def test_offline_or_without_datasets_the_model_corpus_is_chosen(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    assert not choice.datasets_available()
    picked = choose_corpus(None)
    assert picked.kind == "model" and "datasets package is not installed" in picked.reason
    assert "sampled from the model" in picked.describe()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE=1" in choose_corpus(None).reason


def test_the_up_front_check_is_cheap_and_says_what_to_do(tmp_path):
    with pytest.raises(StatsError) as info:
        check_corpus([tmp_path / "missing.txt"])
    message = str(info.value)
    assert "missing.txt" in message and "--corpus model" in message
    assert "FACTEDIT_CORPUS" in message and "pip install datasets" in message
    assert check_corpus(None, {"corpus": "model"}).kind == "model"  # hparams.corpus
    with pytest.raises(StatsError, match=r"\(hparams\.corpus\): .*nope\.txt"):
        check_corpus(None, {"corpus": str(tmp_path / "nope.txt")})
    assert check_corpus(None).kind == "model"  # offline here
    code = (
        "import sys; from factedit.stats.choice import choose_corpus; choose_corpus(None); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "FACTEDIT_HOME": str(tmp_path / "h")},
        check=True,
    )
    assert out.stdout.strip() == "[]"


# ---- WikiText-103 ------------------------------------------------------------------------


def test_wikitext_is_downloaded_once_and_reused_offline(env, monkeypatch, lm, corpus_path):
    fake = FakeDatasets(monkeypatch, wikitext_lines(corpus_path))
    paths = resolve_corpus(None, lm=lm, n_tokens=500, seq_len=32, show_progress=False)
    assert fake.calls == [
        (("Salesforce/wikitext", "wikitext-103-raw-v1"), {"split": "train", "streaming": True})
    ]
    assert paths[0].parent == env / "corpora" and paths[0].suffix == ".txt"
    assert list(iter_documents(paths)) == list(iter_documents([corpus_path]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "datasets", None)
    cached = choose_corpus(None, n_tokens=500)
    assert cached.kind == "wikitext" and not cached.download and cached.paths == tuple(paths)
    c = second_moment(lm, 1, n_tokens=500, seq_len=32, show_progress=False)
    assert c.shape == (128, 128) and len(fake.calls) == 1


def test_a_failed_download_warns_and_samples_from_the_model(monkeypatch, lm):
    fake = FakeDatasets(monkeypatch, [], error=ConnectionError("no route to host"))
    warnings: list[str] = []
    monkeypatch.setattr(corpus, "warn", warnings.append)
    paths = resolve_corpus(None, lm=lm, n_tokens=150, seq_len=32, show_progress=False)
    assert paths[0].name.startswith("model-") and paths[0].suffix == ".jsonl"
    assert len(warnings) == 1 and "no route to host" in warnings[0]
    assert not choice.wikitext_path(150).exists()  # nothing half-written
    resolve_corpus(None, lm=lm, n_tokens=150, seq_len=32, show_progress=False)
    assert len(fake.calls) == 1  # not retried in this process


# ---- the model-sampled corpus ------------------------------------------------------------


def test_sampled_corpus_is_deterministic_for_a_seed(env, monkeypatch, lm, tmp_path):
    first = sample(lm).read_bytes()
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "other"))
    again = sample(lm, settings=SampleSettings(doc_tokens=24, batch_size=3)).read_bytes()
    assert again == first  # documents are seeded one by one: the batch size does not count
    other_seed = sample(lm, settings=SampleSettings(doc_tokens=24, seed=1)).read_bytes()
    assert other_seed != first
    texts = [json.loads(line)["text"] for line in first.decode().splitlines()]
    assert texts[0].startswith(sampled.NEUTRAL_PROMPTS[0])
    assert texts[1].startswith(sampled.NEUTRAL_PROMPTS[1])


def test_sampled_corpus_holds_just_enough_and_its_digest_is_stable(env, monkeypatch, lm):
    path = sample(lm, n_tokens=150, seq_len=32)
    assert token_sequences(lm.tokenizer, [path], 150, 32).shape == (5, 32)
    lines = path.read_text().splitlines()
    shorter = path.with_name("shorter.jsonl")
    shorter.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(StatsError, match="only"):  # the shortest sufficient prefix is kept
        token_sequences(lm.tokenizer, [shorter], 150, 32)
    digest = corpus_digest([path])
    path.unlink()
    assert corpus_digest([sample(lm, n_tokens=150, seq_len=32)]) == digest


def test_sampled_corpus_is_cached_and_the_second_call_runs_no_model(monkeypatch, lm):
    path = sample(lm)

    def boom(*_args, **_kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(sampled, "sample_ids", boom)
    assert sample(lm) == path


def test_an_interrupted_sampling_resumes_and_a_larger_corpus_reuses_the_documents(
    env, monkeypatch, lm, tmp_path
):
    whole = sample(lm, n_tokens=300).read_bytes()
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "again"))
    real, batches = sampled.sample_documents, []

    def flaky(lm_, rows, settings):
        batches.append(rows)
        if len(batches) == 2:
            raise KeyboardInterrupt
        return real(lm_, rows, settings)

    monkeypatch.setattr(sampled, "sample_documents", flaky)
    with pytest.raises(KeyboardInterrupt):
        sample(lm, n_tokens=300)
    assert list(batches[-1]) == [4, 5, 6, 7]
    assert sample(lm, n_tokens=300).read_bytes() == whole
    assert batches[2][0] == 4  # resumed at the first document not yet sampled
    done, sampled_before = len(whole.decode().splitlines()), len(batches)
    larger = sample(lm, n_tokens=600).read_bytes()
    assert larger.startswith(whole) and len(batches) > sampled_before
    assert all(b[0] >= done for b in batches[sampled_before:])  # none sampled twice


def test_c_from_the_sampled_corpus_is_symmetric_psd(env, monkeypatch, lm):
    monkeypatch.setattr(choice, "SAMPLED_N_TOKENS", 200)  # the model corpus' own default
    c = second_moment(lm, 1, corpus=["model"], seq_len=32, show_progress=False)
    assert c.shape == (128, 128) and torch.isfinite(c).all()
    torch.testing.assert_close(c, c.T)
    eig = torch.linalg.eigvalsh(c.double())
    assert eig.min() >= -1e-6 * eig.max()
    sidecar = json.loads(next((env / "stats").glob("*.json")).read_text())
    assert sidecar["key"]["n_tokens"] == 200 and sidecar["corpus_kind"] == "model"


def test_the_editor_leaves_the_count_to_the_corpus_unless_given(lm):
    from factedit.session import EditSession

    assert EditSession(lm, layers=[1], corpus=["model"]).state.n_tokens is None
    given = EditSession(lm, layers=[1], hparams={"corpus": "model", "mom2_n_tokens": 300})
    assert given.state.corpus == ["model"] and given.state.n_tokens == 300


def test_the_head_runs_in_bfloat16_only_while_sampling(lm):
    head = lm.model.get_output_embeddings()
    ids = torch.tensor([[1, 2, 3, 4]])
    before = lm.model(input_ids=ids).logits
    with sampled._head_in(lm, "bfloat16"):
        fast = lm.model(input_ids=ids).logits
    assert "forward" not in head.__dict__  # the module's own forward is back
    torch.testing.assert_close(lm.model(input_ids=ids).logits, before, rtol=0, atol=0)
    torch.testing.assert_close(fast, before, rtol=0.02, atol=0.02 * before.abs().max().item())
    assert sampled.pool_key(lm, SMALL)["head"] == sampled.head_dtype(lm)


@pytest.mark.real
def test_real_gemma_samples_readable_documents(gemma, env):
    settings = SampleSettings(doc_tokens=32, batch_size=4)
    path = sampled_corpus(gemma, n_tokens=200, seq_len=64, settings=settings, show_progress=False)
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    assert all(t.startswith(p) for t, p in zip(texts, sampled.NEUTRAL_PROMPTS, strict=False))
    assert all(len(t.split()) > 10 for t in texts)
    assert token_sequences(gemma.tokenizer, [path], 200, 64).shape == (4, 64)
