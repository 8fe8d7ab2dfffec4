"""Benchmark CLI start-up: wall time of quick ``factedit`` commands in a fresh interpreter.

    PYTHONPATH=src python scripts/bench_cli.py [--repeats 5] [--json FILE]

Each command (``factedit --help``, ``factedit edit validate configs/examples/eiffel.yaml``,
``factedit models list``) runs ``--repeats`` times in a fresh subprocess of this Python, the
Typer app called in-process the way the ``factedit`` console script calls it; the median wall
time is reported next to that of ``python -c pass`` measured in the same run (the interpreter's
own start-up), and ``over_python_s`` is the difference. One extra run of each command reports
which heavy modules (torch, transformers, numpy, matplotlib) it imported. None of these
commands should load a model, torch or transformers. JSON on stdout (and in --json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "numpy", "matplotlib")
COMMANDS: dict[str, list[str]] = {
    "help": ["--help"],
    "edit_validate": ["edit", "validate", "configs/examples/eiffel.yaml"],
    "models_list": ["models", "list"],
}
# What the console script does: import the app, run it; SystemExit carries the exit code.
RUN_APP = "import sys; sys.argv[0] = 'factedit'; from factedit.cli.main import app; app()"
REPORT_IMPORTS = (
    "import atexit, json, os, sys; heavy = {heavy!r}; "
    "atexit.register(lambda: open(os.environ['BENCH_CLI_IMPORTS'], 'w').write("
    "json.dumps(sorted(m for m in heavy if m in sys.modules)))); " + RUN_APP
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("FACTEDIT_QUIET", "1")
    env["COLUMNS"] = "100"
    return env


def _time_once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{argv[3:] or argv}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds


def _timed(argv: list[str], repeats: int) -> dict:
    times = [_time_once(argv) for _ in range(repeats)]
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times}


def heavy_imports(args: list[str]) -> list[str]:
    """The heavy modules a command imports (written to a file by an atexit hook)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imports.json"
        env = {**_env(), "BENCH_CLI_IMPORTS": str(path)}
        code = REPORT_IMPORTS.format(heavy=HEAVY)
        subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True)
        return json.loads(path.read_text()) if path.is_file() else ["?"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", "--out", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)

    report: dict = {
        "benchmark": "bench_cli",
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "repeats": args.repeats,
        "statistic": "median wall time of a fresh subprocess",
    }
    python = _timed([sys.executable, "-c", "pass"], args.repeats)
    report["python_c_pass"] = python
    commands = {}
    for name, cli_args in COMMANDS.items():
        row = _timed([sys.executable, "-c", RUN_APP, *cli_args], args.repeats)
        row["command"] = "factedit " + " ".join(cli_args)
        row["over_python_s"] = row["median_s"] - python["median_s"]
        row["heavy_imports"] = heavy_imports(cli_args)
        commands[name] = row
        print(json.dumps({name: row["median_s"]}), file=sys.stderr)
    report["commands"] = commands
    report["load_average_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_path:
        sys.path.insert(0, str(REPO / "src"))
        from factedit.paths import atomic_write_text

        atomic_write_text(args.json_path, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
