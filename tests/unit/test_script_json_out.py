"""scripts/json_out.py: the ``--hparams`` option the benchmark scripts share, and their JSON
tail."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def json_out():
    spec = importlib.util.spec_from_file_location("json_out", SCRIPTS / "json_out.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hparams_option_takes_a_json_object_and_defaults_to_empty(json_out) -> None:
    parser = argparse.ArgumentParser()
    json_out.add_hparams_option(parser, "over the preset's")
    assert parser.parse_args([]).hparams == {}
    given = parser.parse_args(["--hparams", '{"window_passes": 1, "l2": 0.5}']).hparams
    assert given == {"window_passes": 1, "l2": 0.5}


@pytest.mark.parametrize(
    ("text", "says"), [("[1]", "must be a JSON object"), ("{window: 1}", "not JSON")]
)
def test_hparams_option_refuses_what_is_not_a_json_object(json_out, capsys, text, says) -> None:
    parser = argparse.ArgumentParser(prog="bench")
    json_out.add_hparams_option(parser, "for every method")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--hparams", text])
    assert stop.value.code == 2
    assert says in capsys.readouterr().err


def test_emit_prints_and_writes_the_same_report(json_out, tmp_path, capsys) -> None:
    report = {"benchmark": "x", "ratio": 0.25}
    out = tmp_path / "report.json"
    assert json_out.emit(report, out) is report
    assert json.loads(out.read_text()) == report
    assert json.loads(capsys.readouterr().out) == report
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it
