"""scripts/memit_propagation.py splits a residual change along / across a share and onto the
massive coordinates, on hand-built vectors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def propagation():
    sys.path.insert(0, str(SCRIPTS))  # for json_out
    try:
        path = SCRIPTS / "memit_propagation.py"
        spec = importlib.util.spec_from_file_location("memit_propagation", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def test_massive_coordinates_are_those_far_above_the_median(propagation):
    stream = torch.ones(3, 8)
    stream[:, 2] = 50.0
    stream[:, 5] = -30.0
    stream[:, 6] = 9.0  # large, but under 10x the median
    assert propagation.massive_coordinates(stream) == [2, 5]


def test_change_splits_along_across_and_massive(propagation):
    share = torch.tensor([[3.0, 0.0, 0.0, 100.0]])
    change = torch.tensor([[2.0, 4.0, 0.0, 7.0]])  # 2 along, 4 across, 7 on coordinate 3
    parts = propagation.split_change(change, share, massive=[3])
    assert parts["along_share"] == pytest.approx(2.0)
    assert parts["across_share"] == pytest.approx(4.0)
    assert parts["on_massive"] == pytest.approx(7.0)
