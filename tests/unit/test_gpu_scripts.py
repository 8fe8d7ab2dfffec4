"""The GPU benchmark scripts: skip cleanly without CUDA, and run end to end on tiny shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SRC = SCRIPTS.parent / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "FACTEDIT_QUIET": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to skip")
def test_gpu_memit_skips_without_cuda():
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_memit.py")], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device" in json.loads(done.stdout.strip().splitlines()[-1])["skipped"]


def test_gpu_memit_tiny_reports_seconds_per_fact_against_the_limit(tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(SCRIPTS / "gpu_memit.py"), "--tiny", "--models", "gpt2-xl"]
    command += ["--facts", "4,8", "--z-steps", "2", "--rome-edits", "1", "--out", str(out)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["matmul_tflops"] > 0
    [shape] = report["results"]
    assert shape["stats_tokens_per_s"] > 0 and shape["z_step_flops_per_fact"] > 0
    assert [m["facts"] for m in shape["memit"]] == [4, 8]
    for m in shape["memit"]:
        assert 0 < m["z_seconds_per_fact"] <= m["seconds_per_fact"]
        assert m["z_arithmetic_limit_s"] > 0 and m["z_ratio_to_limit"] > 0
    assert shape["rome_seconds_per_edit"] > 0
