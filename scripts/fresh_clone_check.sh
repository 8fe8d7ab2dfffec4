#!/usr/bin/env bash
# The README's two set-up commands on a fresh clone: clones the repository's committed HEAD
# into a new temporary directory (where no ../shared exists, so nothing of this checkout's
# data is found), runs `make test` and `make demo` there, each under a timeout, and reports
# for each its exit code, wall time and last output lines; --json FILE writes the same as JSON.
#
#   scripts/fresh_clone_check.sh [--only test|demo] [--json FILE] [--keep] [--dry-run]
#                                [--timeout-test S] [--timeout-demo S] [--python PY]
#                                [--verbose] [--strict]
#
# The clone is fresh, the machine is not: an installed torch is kept (the Makefile's venv
# sees the system site-packages of $PYTHON, default python3), and pip's cache and
# $FACTEDIT_HOME (~/.cache/factedit: models, statistics) are the machine's. `make test` in the
# clone has its own .test-home, so the real-model tests fetch and dequantise the presets once.
# Without a corpus offline `make demo` may stop within seconds with a message that says so;
# the script only reports what happened. Exit status: 0 when the check ran (whatever the
# steps did; --strict: 1 when a step failed or timed out), 2 for a usage error or a failed
# clone.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "fresh_clone_check: $*" >&2; exit 2; }

only="" json="" keep=0 dry_run=0 verbose=0 strict=0
timeout_test=5400 timeout_demo=1800
python="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
    case "$1" in
        --only) [ $# -ge 2 ] || die "--only needs test or demo"; only="$2"; shift 2 ;;
        --only=*) only="${1#*=}"; shift ;;
        --json) [ $# -ge 2 ] || die "--json needs a file"; json="$2"; shift 2 ;;
        --json=*) json="${1#*=}"; shift ;;
        --timeout-test) [ $# -ge 2 ] || die "--timeout-test needs seconds"; timeout_test="$2"; shift 2 ;;
        --timeout-demo) [ $# -ge 2 ] || die "--timeout-demo needs seconds"; timeout_demo="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --verbose) verbose=1; shift ;;
        --strict) strict=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case "$only" in
    "") steps=(test demo) ;;
    test|demo) steps=("$only") ;;
    *) die "--only takes test or demo, not '$only'" ;;
esac
for t in "$timeout_test" "$timeout_demo"; do
    [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "a timeout is a whole number of seconds, not '$t'"
done
command -v "$python" >/dev/null || die "no interpreter '$python' (give one with --python)"
command -v git >/dev/null || die "git is needed"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"
if [ -n "$json" ]; then
    json_dir="$(cd "$(dirname "$json")" 2>/dev/null && pwd)" || die "no directory for --json $json"
    json="$json_dir/$(basename "$json")"
fi

repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null)" \
    || die "$(dirname "$0") is not inside a git repository"
commit="$(git -C "$repo" rev-parse HEAD)" || die "$repo has no commit"
dirty="$(git -C "$repo" status --porcelain --untracked-files=no | wc -l | tr -d ' ')"

base="$(mktemp -d "${TMPDIR:-/tmp}/factedit-fresh.XXXXXX")"
clone="$base/factedit"
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    if [ "$keep" = 1 ]; then
        echo "kept: $base"
    else
        rm -rf "$base"
    fi
}
trap cleanup EXIT

echo "== cloning $repo at ${commit:0:12} into $clone"
[ "$dirty" = 0 ] || echo "   note: $dirty uncommitted change(s) in $repo are not part of the check"
git clone --quiet --no-checkout "$repo" "$clone" 2>"$base/clone.log" \
    || { cat "$base/clone.log" >&2; die "git clone failed"; }
git -C "$clone" -c advice.detachedHead=false checkout --quiet --detach "$commit" \
    || die "checkout of $commit failed"
[ ! -e "$base/shared" ] || die "$base/shared exists; the clone must not see a shared/ folder"
[ -f "$clone/Makefile" ] || die "the clone has no Makefile"

torch_version="$("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
in_venv="$("$python" -c 'import sys; print(int(sys.prefix != sys.base_prefix))' 2>/dev/null || echo 0)"
echo "   python: $(command -v "$python") ($("$python" -V 2>&1)); torch there: $torch_version"
if [ "$in_venv" = 1 ]; then
    echo "   note: $python is a virtual environment's; the Makefile's venv sees the base" \
         "interpreter's site-packages, not this venv's (give --python the one with torch)"
fi
for var in FACTEDIT_HOME FACTEDIT_CORPUS FACTEDIT_TEST_HOME; do
    [ -z "${!var:-}" ] || echo "   note: \$$var=${!var} is set and applies in the clone"
done

declare -A limit=([test]="$timeout_test" [demo]="$timeout_demo")
results="$base/results"
mkdir "$results"

if [ "$dry_run" = 1 ]; then
    echo "== dry run: would run in $clone"
    for step in "${steps[@]}"; do
        echo "   timeout --kill-after=30 ${limit[$step]} make -C $clone PYTHON=$python $step"
    done
fi

for step in "${steps[@]}"; do
    [ "$dry_run" = 0 ] || break
    log="$results/$step.log"
    echo "== make $step (timeout ${limit[$step]} s)"
    t0="$(date +%s%N)"
    set +e
    if [ "$verbose" = 1 ]; then
        timeout --kill-after=30 "${limit[$step]}" make -C "$clone" PYTHON="$python" "$step" \
            </dev/null 2>&1 | tee "$log"
        rc="${PIPESTATUS[0]}"
    else
        timeout --kill-after=30 "${limit[$step]}" make -C "$clone" PYTHON="$python" "$step" \
            </dev/null >"$log" 2>&1
        rc=$?
    fi
    set -e
    t1="$(date +%s%N)"
    echo "$rc" >"$results/$step.rc"
    echo $(((t1 - t0) / 1000000)) >"$results/$step.ms"
    tail -n 15 "$log" >"$results/$step.tail"
done

# The summary (and the JSON): one interpreter that is sure to exist does the formatting.
python3 - "$results" "$json" "$repo" "$commit" "$clone" "$keep" "$dry_run" "$python" \
    "$torch_version" "$dirty" "$timeout_test" "$timeout_demo" "${steps[@]}" <<'PY'
import json, re, sys
from pathlib import Path

results, out, repo, commit, clone, keep, dry, python, torch, dirty, t_test, t_demo, *steps = (
    sys.argv[1:]
)
results = Path(results)
ansi = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
limits = {"test": int(t_test), "demo": int(t_demo)}
report = {
    "repo": repo,
    "commit": commit,
    "clone": clone,
    "kept": keep == "1",
    "dry_run": dry == "1",
    "python": python,
    "torch_preinstalled": None if torch == "none" else torch,
    "uncommitted_changes_left_out": int(dirty),
    "steps": {},
}
failed = 0
for step in steps:
    entry = {"command": f"make {step}", "timeout_s": limits[step]}
    rc_file = results / f"{step}.rc"
    if rc_file.is_file():
        rc = int(rc_file.read_text())
        tail = (results / f"{step}.tail").read_text(errors="replace")
        lines = [ansi.sub("", line).rstrip() for line in tail.replace("\r", "\n").splitlines()]
        entry.update(
            exit_code=rc,
            timed_out=rc in (124, 137),
            seconds=round(int((results / f"{step}.ms").read_text()) / 1000, 1),
            tail=[line for line in lines if line][-15:],
        )
        failed += rc != 0
    else:
        entry["status"] = "planned (dry run)" if dry == "1" else "not run"
    report["steps"][step] = entry

print("== summary" + (" (dry run)" if dry == "1" else ""))
for step, entry in report["steps"].items():
    if "exit_code" not in entry:
        print(f"make {step}: {entry['status']}")
        continue
    verdict = "TIMED OUT" if entry["timed_out"] else ("ok" if entry["exit_code"] == 0 else "FAILED")
    print(f"make {step}: {verdict} (exit {entry['exit_code']}) in {entry['seconds']} s")
    for line in entry["tail"]:
        print(f"    {line}")
if out:
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"json: {out}")
(results / "failed").write_text(str(failed))
PY

if [ "$strict" = 1 ] && [ "$(cat "$results/failed")" != 0 ]; then
    exit 1
fi
exit 0
