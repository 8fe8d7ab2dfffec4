"""The GitHub Actions workflows in .github/workflows lint clean and do what the README says.

actionlint (a dev dependency, with shellcheck for the ``run:`` scripts) checks every workflow
file. It is required wherever ``$CI`` is set; elsewhere the lint tests skip only when no
``actionlint`` binary can be found at all. The workflow for a user's repository,
``factedit-eval.yml``, is also read as YAML and checked for its trigger, its cache, the gate and
the job summary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
EVAL_WORKFLOW = WORKFLOWS / "factedit-eval.yml"
SPEC = "facts.yaml"
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
# The interpreter's own bin directory first: `.venv/bin/python -m pytest` finds the venv's
# actionlint and shellcheck without an activated venv.
BIN_DIR = Path(sys.executable).parent
SEARCH_PATH = os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")])


@pytest.fixture(scope="module")
def actionlint() -> str:
    found = shutil.which("actionlint", path=SEARCH_PATH)
    if found is None:
        message = (
            "actionlint not found (on PATH or beside the interpreter); it comes with the dev "
            "extra: pip install -e '.[dev]'"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; it is required in CI")
        pytest.skip(message)
    return found


def _lint(actionlint: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint, "-no-color", *map(str, files)],
        cwd=REPO,
        env={**os.environ, "PATH": SEARCH_PATH},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_there_are_workflows():
    assert EVAL_WORKFLOW in WORKFLOW_FILES


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actionlint_finds_nothing(actionlint, workflow):
    done = _lint(actionlint, workflow)
    assert done.returncode == 0 and not done.stdout.strip(), (
        f"actionlint reports on {workflow.relative_to(REPO)} (exit {done.returncode}):\n"
        f"{done.stdout}{done.stderr}"
    )


BROKEN = """\
name: broken
jobs:
  eval:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          no-such-input: true
      - run: echo "${{ github.no_such_context }}"
      - if: ${{ steps.missing.outputs.x == }}
        run: echo hi
"""


def test_actionlint_rejects_a_broken_workflow(actionlint, tmp_path):
    """The lint can fail: a workflow without a trigger, with an unknown action input, a
    bad context and a malformed expression is rejected."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    done = _lint(actionlint, broken)
    assert done.returncode == 1, f"exit {done.returncode}:\n{done.stdout}{done.stderr}"
    out = done.stdout
    assert '"on" section is missing' in out
    assert "no-such-input" in out
    assert "no_such_context" in out


# ---- what factedit-eval.yml does -----------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(EVAL_WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    jobs = workflow["jobs"]
    assert len(jobs) == 1, f"expected one job, got {sorted(jobs)}"
    return next(iter(jobs.values()))["steps"]


def _index(steps: list[dict], what: str, pred) -> int:
    hits = [i for i, s in enumerate(steps) if pred(s)]
    assert hits, f"no step {what}"
    return hits[0]


def _uses(step: dict, action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


def test_has_triggers_on_the_spec_and_the_workflow(workflow):
    # YAML 1.1 reads the key `on` as True
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), "the workflow has no `on:` trigger"
    assert "workflow_dispatch" in on
    for event in ("push", "pull_request"):
        paths = (on.get(event) or {}).get("paths", [])
        assert SPEC in paths, f"{event} does not trigger on {SPEC}"
        assert ".github/workflows/factedit-eval.yml" in paths, f"{event}: not on the workflow"


def test_installs_cpu_torch_and_factedit(steps):
    runs = "\n".join(str(s.get("run", "")) for s in steps)
    setup = steps[_index(steps, "setup-python", lambda s: _uses(s, "actions/setup-python"))]
    assert str(setup["with"]["python-version"]) == "3.11"
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs
    assert _uses(steps[0], "actions/checkout")


def test_factedit_comes_with_the_datasets_extra(workflow, steps):
    runs = "\n".join(str(s.get("run", "")) for s in steps)
    package = workflow.get("env", {}).get("FACTEDIT_PACKAGE", "")
    assert "factedit[datasets]" in package
    assert 'pip install "$FACTEDIT_PACKAGE"' in runs


def test_cache_is_keyed_on_os_version_and_spec(steps):
    i = _index(
        steps,
        "restoring ~/.cache/factedit",
        lambda s: _uses(s, "actions/cache") or _uses(s, "actions/cache/restore"),
    )
    cache = steps[i]["with"]
    assert cache["path"] == "~/.cache/factedit"
    key = cache["key"]
    assert f"hashFiles('{SPEC}')" in key
    assert "runner.os" in key
    assert "steps.factedit.outputs.version" in key  # factedit's installed version
    version = _index(steps, "reading factedit's version", lambda s: s.get("id") == "factedit")
    assert version < i
    if _uses(steps[i], "actions/cache/restore"):
        save = steps[_index(steps, "saving the cache", lambda s: _uses(s, "actions/cache/save"))]
        assert save["with"]["path"] == cache["path"]
        assert "cache-primary-key" in save["with"]["key"]
        assert str(save.get("if", "")).startswith("always()")


def test_eval_gates_on_the_thresholds(steps):
    i = _index(steps, "running factedit eval", lambda s: "factedit eval" in str(s.get("run", "")))
    run = steps[i]["run"]
    assert f"factedit eval {SPEC}" in run
    assert "--json report.json" in run and "--markdown report.md" in run
    assert "--fail-under es=95,ps=80,ns=70" in run
    assert "if" not in steps[i], "the gate must fail the job"
    cache = _index(steps, "restoring the cache", lambda s: "actions/cache" in str(s.get("uses")))
    assert cache < i


def test_report_goes_to_the_job_summary_and_an_artifact(steps):
    gate = _index(steps, "running factedit eval", lambda s: "factedit eval" in str(s.get("run")))
    summary = _index(
        steps,
        "appending to $GITHUB_STEP_SUMMARY",
        lambda s: '>> "$GITHUB_STEP_SUMMARY"' in str(s.get("run", "")),
    )
    assert summary > gate
    assert steps[summary].get("if") == "always()"
    assert "report.md" in steps[summary]["run"]
    upload = _index(steps, "uploading", lambda s: _uses(s, "actions/upload-artifact"))
    assert upload > gate
    assert steps[upload].get("if") == "always()"
    assert steps[upload]["with"]["path"] == "report.*"
