"""The quick commands answer at once: ``--help`` (every command's), ``edit validate`` and
``models list`` import neither torch nor transformers (nor numpy / matplotlib).

Each command runs in a fresh interpreter (``sys.executable -c``) that calls the Typer app
in-process, the way the ``factedit`` console script does, then reports which heavy modules
ended up in ``sys.modules``. The rest checks what that laziness relies on: the constants the
CLI copies from modules that import torch, and that every name a command uses is importable.
"""

from __future__ import annotations

import builtins
import dis
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import typer

from factedit.cli import common
from factedit.cli import edit as edit_cli
from factedit.cli import eval as eval_cli
from factedit.cli import trace as trace_cli
from factedit.cli.main import app
from proc_helpers import run_python

REPO = Path(__file__).resolve().parents[2]
EIFFEL = REPO / "configs" / "examples" / "eiffel.yaml"
HEAVY = ("torch", "transformers", "numpy", "matplotlib")

RUN = f"""
import json, sys
sys.argv = ["factedit", *sys.argv[1:]]
from factedit.cli.main import app
try:
    app()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print("\\n" + json.dumps({{"exit": code, "heavy": heavy}}))
"""


def run_fresh(args: list[str], home: Path) -> tuple[dict, str]:
    """Run ``factedit ARGS`` in a fresh interpreter: ({exit, heavy}, its output)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "FACTEDIT_HOME": str(home),
        "FACTEDIT_QUIET": "1",
        "COLUMNS": "100",
        "PYTHONPATH": str(REPO / "src"),
    }
    done = run_python(["-c", RUN, *args], cwd=REPO, env=env)
    *output, last = done.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(output) + done.stderr


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the app (typer may vendor click: no isinstance check)."""
    paths = [prefix]
    if isinstance(getattr(command, "commands", None), dict):
        for name, sub in sorted(command.commands.items()):
            paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


HELP_COMMANDS = [[*path, "--help"] for path in _command_paths(typer.main.get_command(app))]
QUICK_COMMANDS = [
    *HELP_COMMANDS,
    ["edit", "validate", str(EIFFEL)],
    ["models", "list"],
]


def test_every_command_is_covered():
    names = {" ".join(c[:-1]) for c in HELP_COMMANDS}
    assert {"", "edit", "edit validate", "edit apply", "models list", "eval", "trace"} <= names
    assert {"models fetch", "stats collect", "stats list"} <= names


@pytest.mark.parametrize("args", QUICK_COMMANDS, ids=" ".join)
def test_quick_command_imports_no_torch(args, tmp_path):
    report, output = run_fresh(args, tmp_path)
    assert report["exit"] == 0, output
    assert report["heavy"] == [], f"factedit {' '.join(args)} imported {report['heavy']}"
    if args[-1] == "--help":
        assert "Usage:" in output
    elif args[0] == "edit":
        assert "ok" in output and "1 edit, method rome" in output
    else:
        assert "gemma-3-270m (default)" in output and "smollm2-135m" in output


def test_spec_and_models_packages_are_torch_free(tmp_path):
    code = (
        "import sys; import factedit.spec, factedit.models, factedit.cli.main; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- what it relies on


def test_copied_constants_agree_with_their_sources():
    from factedit.evaluate.greedy import ANSWER_TOKENS
    from factedit.evaluate.metrics import METRIC_KEYS
    from factedit.evaluate.perplexity import HELDOUT_TOKENS

    assert common.METRIC_KEYS == METRIC_KEYS
    assert common.ANSWER_TOKENS == ANSWER_TOKENS
    assert common.HELDOUT_TOKENS == HELDOUT_TOKENS


def test_models_package_names_are_imported_on_first_use():
    import factedit.models as models
    from factedit.models import ARCHITECTURES, LoadedModel, load_model, resolve_architecture
    from factedit.models.arch import ARCHITECTURES as arch_map
    from factedit.models.loading import LoadedModel as loaded_cls
    from factedit.models.loading import load_model as loader

    assert load_model is loader and LoadedModel is loaded_cls and ARCHITECTURES is arch_map
    assert callable(resolve_architecture)
    assert set(models.__all__) <= set(dir(models))
    with pytest.raises(AttributeError, match="no_such_name"):
        models.no_such_name  # noqa: B018


def _globals_used(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _globals_used(const)
    return names


@pytest.mark.parametrize("module", [edit_cli, eval_cli, trace_cli], ids=lambda m: m.__name__)
def test_lazy_names_cover_every_global_the_commands_use(module):
    module._heavy.load()
    for name, fn in vars(module).items():
        fn = inspect.unwrap(fn) if callable(fn) else fn
        if not inspect.isfunction(fn) or fn.__module__ != module.__name__:
            continue
        missing = {
            g
            for g in _globals_used(fn.__code__)
            if g not in vars(module) and not hasattr(builtins, g)
        }
        assert not missing, f"{module.__name__}.{name} uses undefined {sorted(missing)}"


def test_lazy_imports_keep_a_monkeypatched_name(monkeypatch):
    from factedit.session import EditSession

    assert edit_cli.EditSession is EditSession  # module attribute access imports it
    stand_in = object()
    monkeypatch.setattr(edit_cli, "EditSession", stand_in)
    edit_cli._heavy.load()
    assert edit_cli.EditSession is stand_in
    with pytest.raises(AttributeError, match="no_such_name"):
        edit_cli.no_such_name  # noqa: B018


def test_common_load_model_delegates(monkeypatch):
    seen = []
    monkeypatch.setattr(
        "factedit.models.loading.load_model", lambda ref=None, **kw: seen.append((ref, kw))
    )
    common.load_model("m", device="cpu")
    assert seen == [("m", {"device": "cpu"})]
