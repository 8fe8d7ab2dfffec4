"""The journal of independent ``factedit eval`` runs: an interrupted run resumes to the same
numbers, computing only the missing edits; other settings, corrupt entries and
``--no-resume`` are measured again (:mod:`factedit.evaluate.journal`)."""

from __future__ import annotations

import json
import pickle
import types

import pytest
import torch
from test_eval_runs import (
    EDITS,
    RandomSession,
    cli,  # noqa: F401 (the fixture)
)

import factedit.evaluate.runner as runner
from factedit.evaluate import journal as journal_module
from factedit.evaluate.journal import EvalJournal, run_settings, source_digest
from factedit.evaluate.perplexity import HeldOut
from factedit.evaluate.runner import EvalOptions, run_independent
from factedit.report import build_report, render_markdown
from factedit.session import EditSession
from factedit.spec import EditRequest

THIRD = EditRequest(
    subject="Barack Obama",
    prompt="{} was born in",
    target_new="Tokyo",
    target_true="Hawaii",
    paraphrases=("Barack Obama's birthplace is",),
    neighborhood=("Joe Biden was born in",),
    generation_prompts=("Barack Obama grew up",),
    case_id="3",
)
REQUESTS = [*EDITS, THIRD]
NO_GEN = EvalOptions(generation=False)


@pytest.fixture
def computed(monkeypatch) -> dict[str, list[int]]:
    """The edit indices the runner computed an update for and measured, in order."""
    seen: dict[str, list[int]] = {"compute": [], "measure": []}
    real_compute, real_measure = runner.compute_step, runner._measure_many

    def compute_step(session, index, request):
        seen["compute"].append(index)
        return real_compute(session, index, request)

    def measure(lm, indices, requests, options):
        seen["measure"].extend(indices)
        return real_measure(lm, indices, requests, options)

    monkeypatch.setattr(runner, "compute_step", compute_step)
    monkeypatch.setattr(runner, "_measure_many", measure)
    return seen


def _clear(seen: dict[str, list[int]]) -> None:
    for indices in seen.values():
        indices.clear()


def _journal(lm, session, options, *, kind="counterfact", reuse=True) -> EvalJournal:
    return EvalJournal.for_run(lm, session, options, kind, reuse=reuse)


def _per_edit(result) -> list[tuple]:
    """Everything measured per edit (the seconds aside)."""
    return [
        (o.index, o.request, o.status, o.reason, o.layers, o.perplexity,
         o.unedited.to_dict(), o.edited.to_dict(), o.metrics_unedited, o.metrics_edited)
        for o in result.outcomes
    ]  # fmt: skip


def _heldout(lm) -> HeldOut:
    g = torch.Generator().manual_seed(0)
    return HeldOut(torch.randint(0, lm.model.config.vocab_size, (2, 12), generator=g), "test")


def _stop_at(index: int):
    def on_edit(i: int) -> None:
        if i == index:
            raise KeyboardInterrupt

    return on_edit


def test_an_interrupted_run_resumes_to_the_same_numbers_computing_only_the_missing_edits(
    tiny, home, computed
):
    lm = tiny("llama")
    options = EvalOptions(generation=True, gen_length=16, heldout=_heldout(lm))
    fresh = run_independent(lm, REQUESTS, RandomSession(lm), options=options)
    _clear(computed)
    journal = _journal(lm, RandomSession(lm), options)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after the second edit was measured
        run_independent(
            lm, REQUESTS, RandomSession(lm), options=options, journal=journal, on_edit=_stop_at(1)
        )
    assert computed["compute"] == [0, 1]
    assert len(list(journal.directory.glob("*.pkl"))) == 2
    assert json.loads((journal.directory / "settings.json").read_text())["key"] == journal.key

    _clear(computed)
    again = _journal(lm, RandomSession(lm), options)
    assert again.directory == journal.directory
    resumed = run_independent(lm, REQUESTS, RandomSession(lm), options=options, journal=again)
    assert computed == {"compute": [2], "measure": [2, 2]}  # unedited and edited, edit 2 only
    assert _per_edit(resumed) == _per_edit(fresh)
    assert resumed.edited == fresh.edited and resumed.unedited == fresh.unedited
    assert resumed.heldout == fresh.heldout
    timing = resumed.timing
    kept = sum(o.edit_seconds + o.measure_seconds for o in resumed.outcomes[:2])
    assert timing["resumed_edits"] == 2 and fresh.timing["resumed_edits"] == 0
    assert timing["total_s"] == pytest.approx(resumed.seconds + kept)
    assert timing["edits_per_minute"] == pytest.approx(60 * 3 / timing["total_s"])
    markdown = render_markdown(build_report(resumed, model=lm))
    assert "2 resumed from an earlier run" in markdown
    assert "resumed" not in render_markdown(build_report(fresh, model=lm))


@pytest.mark.parametrize(
    "change",
    [
        {"options": EvalOptions(generation=False, answer_tokens=4)},
        {"session": {"layers": (2,)}},
        {"kind": "zsre"},
    ],
    ids=["answer_tokens", "layers", "kind"],
)
def test_a_setting_that_changes_the_numbers_does_not_reuse_entries(tiny, home, computed, change):
    lm = tiny("llama")
    journal = _journal(lm, RandomSession(lm), NO_GEN)
    first = run_independent(lm, EDITS, RandomSession(lm), options=NO_GEN, journal=journal)
    _clear(computed)
    options = change.get("options", NO_GEN)
    kind = change.get("kind", "counterfact")
    session = RandomSession(lm, **change.get("session", {}))
    journal = _journal(lm, session, options, kind=kind)
    other = run_independent(lm, EDITS, session, options=options, kind=kind, journal=journal)
    assert computed["compute"] == [0, 1]
    assert other.timing["resumed_edits"] == 0
    assert _per_edit(other) != _per_edit(first)


def test_the_run_key_covers_what_determines_the_numbers(tiny, home, corpus_path, tmp_path):
    lm = tiny("llama")
    fast = {"v_num_grad_steps": 2}

    def key(*, options=NO_GEN, kind="counterfact", **kw) -> str:
        settings = {"layers": [1], "hparams": fast, "corpus": [corpus_path], **kw}
        return _journal(lm, EditSession(lm, **settings), options, kind=kind).key

    base = key()
    assert key() == base  # the same settings, another session: the same journal
    other_corpus = tmp_path / "other.txt"
    other_corpus.write_text("Some other text.\n\nAnd more of it.\n")
    changed = [
        key(layers=[2]),
        key(hparams={**fast, "v_lr": 0.1}),
        key(corpus=[other_corpus]),
        key(seed=1),
        key(method="memit", layers=[1, 2]),
        key(allow_large_updates=True),
        key(kind="zsre"),
        key(options=EvalOptions(generation=False, answer_tokens=3)),
        key(options=EvalOptions(generation=False, heldout=_heldout(lm))),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # the corpus file's contents count, not only its name
    named = key(corpus=[other_corpus])
    other_corpus.write_text("Some other text, changed.\n")
    assert key(corpus=[other_corpus]) != named
    settings = run_settings(lm, EditSession(lm, layers=[1], corpus=[corpus_path]), NO_GEN, "spec")
    assert settings["corpus"]["named"] == [str(corpus_path)]
    assert settings["factedit_source"] == source_digest()
    assert settings["dtype"] == "float32" and settings["device"] == "cpu"


def test_any_change_to_factedits_source_changes_the_digest(tmp_path, monkeypatch):
    package = tmp_path / "factedit"
    (package / "evaluate").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "evaluate" / "runner.py").write_text("X = 1\n")
    monkeypatch.setattr(
        journal_module, "factedit", types.SimpleNamespace(__file__=str(package / "__init__.py"))
    )
    digest = source_digest.__wrapped__
    before = digest()
    assert digest() == before
    (package / "evaluate" / "runner.py").write_text("X = 2\n")
    assert digest() != before
    (package / "notes.txt").write_text("not source")
    changed = digest()
    (package / "evaluate" / "runner.py").rename(package / "evaluate" / "scoring.py")
    assert digest() != changed
    assert source_digest() == source_digest() != before  # the real package, memoised


@pytest.mark.parametrize("damage", ["truncated", "not a pickle", "another object", "empty"])
def test_a_corrupt_entry_is_ignored_and_measured_again(tiny, home, computed, damage):
    lm = tiny("gpt2")
    journal = _journal(lm, RandomSession(lm), NO_GEN)
    first = run_independent(lm, REQUESTS, RandomSession(lm), options=NO_GEN, journal=journal)
    entry = journal.path(1, REQUESTS[1])
    data = entry.read_bytes()
    entry.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "not a pickle": b"\x00garbage\xff" * 10,
            "another object": pickle.dumps({"index": 1, "status": "applied"}),
            "empty": b"",
        }[damage]
    )
    _clear(computed)
    again = run_independent(lm, REQUESTS, RandomSession(lm), options=NO_GEN, journal=journal)
    assert computed["compute"] == [1]
    assert _per_edit(again) == _per_edit(first)
    assert again.timing["resumed_edits"] == 2
    kept = journal.get(1, REQUESTS[1])  # measured again and kept again
    assert kept is not None and kept.metrics_edited == first.outcomes[1].metrics_edited


def test_an_entry_of_another_request_is_not_used(tiny, home, computed):
    lm = tiny("llama")
    journal = _journal(lm, RandomSession(lm), NO_GEN)
    run_independent(lm, EDITS, RandomSession(lm), options=NO_GEN, journal=journal)
    journal.path(0, EDITS[0]).replace(journal.path(0, THIRD))
    _clear(computed)
    result = run_independent(lm, [THIRD], RandomSession(lm), options=NO_GEN, journal=journal)
    assert computed["compute"] == [0] and result.outcomes[0].request == THIRD


def test_an_unwritable_journal_warns_once_and_the_run_goes_on(
    tiny, home, computed, failing_writes, capsys
):
    lm = tiny("llama")
    journal = _journal(lm, RandomSession(lm), NO_GEN)
    failing_writes()  # every write through factedit.paths: disk full
    result = run_independent(lm, REQUESTS, RandomSession(lm), options=NO_GEN, journal=journal)
    assert [o.status for o in result.outcomes] == ["applied"] * 3
    assert not list(journal.directory.iterdir())
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "cannot resume" in warnings[0]


# --------------------------------------------------------------------------- CLI


def _edits(path) -> list[dict]:
    return json.loads(path.read_text())["edits"]


def test_cli_an_offset_slice_reuses_the_full_runs_entries_without_generation(
    cli,  # noqa: F811 (the fixture imported above)
    home,
    computed,
    tmp_path,
    monkeypatch,
):
    invoke, spec, _ = cli
    monkeypatch.setenv("FACTEDIT_QUIET", "0")
    full, part, md = tmp_path / "full.json", tmp_path / "part.json", tmp_path / "part.md"
    result = invoke(spec, "--independent", "--no-generation", "--json", full)
    assert result.exit_code == 0, result.output
    assert computed["compute"] == [0, 1] and "resumed" not in result.output
    _clear(computed)
    args = ("--independent", "--no-generation", "--offset", "1", "--json", part)
    result = invoke(spec, *args, "--markdown", md)
    assert result.exit_code == 0, result.output
    assert computed == {"compute": [], "measure": []}
    assert "resumed 1 of 1 edits from" in result.output and str(home / "eval") in result.output
    (kept,), whole = _edits(part), _edits(full)
    assert kept["index"] == 0 and kept["subject"] == whole[1]["subject"]
    assert kept["metrics"] == whole[1]["metrics"]
    assert json.loads(part.read_text())["timing"]["resumed_edits"] == 1
    assert "1 resumed from an earlier run" in md.read_text()

    # texts sampled with the seed seed + index: a slice measures its edits again
    assert invoke(spec, "--independent", "--json", full).exit_code == 0
    _clear(computed)
    result = invoke(spec, "--independent", "--offset", "1", "--json", part)
    assert result.exit_code == 0, result.output
    assert computed["compute"] == [0] and "resumed" not in result.output


def test_cli_no_resume_measures_every_edit_again(
    cli,  # noqa: F811 (the fixture imported above)
    home,
    computed,
    tmp_path,
):
    invoke, spec, _ = cli
    out = tmp_path / "r.json"
    assert invoke(spec, "--independent", "--no-generation", "--json", out).exit_code == 0
    first = _edits(out)
    _clear(computed)
    result = invoke(spec, "--independent", "--no-generation", "--no-resume", "--json", out)
    assert result.exit_code == 0, result.output
    assert computed["compute"] == [0, 1]
    assert json.loads(out.read_text())["timing"]["resumed_edits"] == 0
    assert [e["metrics"] for e in _edits(out)] == [e["metrics"] for e in first]
    _clear(computed)  # what it measured is kept: the default run reuses it
    assert invoke(spec, "--independent", "--no-generation", "--json", out).exit_code == 0
    assert computed["compute"] == [] and json.loads(out.read_text())["timing"]["resumed_edits"] == 2
