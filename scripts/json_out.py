"""What the benchmark scripts share: the ``--hparams`` JSON option, and the JSON tail (print
the report, and write it to ``--out``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from factedit.paths import atomic_write_text


def json_object(text: str) -> dict[str, Any]:
    """An argparse ``type``: ``text`` parsed as a JSON object, or a usage error that says so."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object such as '{{\"window_passes\": 1}}', got {text!r}"
        )
    return value


def add_hparams_option(parser: argparse.ArgumentParser, scope: str) -> None:
    """``--hparams JSON``: method hyper-parameters (``scope`` says over what they apply)."""
    parser.add_argument(
        "--hparams",
        type=json_object,
        default={},
        help=f"hyper-parameters {scope}, as a JSON object (e.g. '{{\"window_passes\": 1}}')",
    )


def emit(report: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Print ``report`` as indented JSON and write the same to ``out`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")  # a run stopped mid-write leaves no half file
    return report
