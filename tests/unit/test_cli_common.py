"""Helpers shared by the CLI commands: ``--layers`` parsing, help texts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from factedit.cli.common import parse_layers
from factedit.cli.main import app
from factedit.errors import SpecError


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("auto", "auto"), (" AUTO ", "auto"), ("4", (4,)), ("4,5", (4, 5))],
)
def test_parse_layers_accepts_auto_and_integers(text, expected):
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["x", "4,x", "-1", "4,4", ","])
def test_parse_layers_rejects_the_rest_naming_the_option(text):
    with pytest.raises(SpecError, match="--layers"):
        parse_layers(text)


def test_stats_help_keeps_the_formula_out_of_rich_markup():
    result = CliRunner().invoke(app, ["stats", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "C = E[k kᵀ]" in result.output
