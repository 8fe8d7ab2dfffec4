"""The JSON tail the benchmark scripts share: print the report, and write it to ``--out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Print ``report`` as indented JSON and write the same to ``out`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
    return report
