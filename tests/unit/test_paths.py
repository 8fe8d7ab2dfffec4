"""Atomic writes: a full disk or Ctrl-C leaves the previous output intact and no temporary."""

from __future__ import annotations

import errno
import os

import pytest

import factedit.paths
from factedit.errors import OutputWriteError
from factedit.paths import atomic_dir, atomic_file, atomic_write_text


def test_disk_full_file_write_names_the_path_and_keeps_the_old_file(
    tmp_path, failing_writes, leftovers
):
    path = tmp_path / "report.json"
    path.write_text('{"old": true}\n')
    failing_writes()
    with pytest.raises(OutputWriteError) as info:
        atomic_write_text(path, '{"new": true}\n' * 100)
    assert str(path) in str(info.value) and "disk full" in str(info.value)
    assert info.value.errno == errno.ENOSPC and "\n" not in str(info.value)
    assert path.read_text() == '{"old": true}\n'
    assert leftovers(tmp_path) == []


def test_disk_full_on_a_new_file_leaves_nothing(tmp_path, failing_writes):
    failing_writes()
    with pytest.raises(OutputWriteError, match="disk full"):
        atomic_write_text(tmp_path / "sub" / "new.md", "text")
    assert list((tmp_path / "sub").iterdir()) == []


def test_ctrl_c_during_a_write_leaves_no_partial_file(tmp_path, failing_writes, leftovers):
    path = tmp_path / "report.md"
    path.write_text("old")
    failing_writes(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new " * 1000)
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_other_os_errors_are_reported_without_disk_full(tmp_path, failing_writes):
    failing_writes(PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    with pytest.raises(OutputWriteError) as info, atomic_file(tmp_path / "x.bin") as fh:
        fh.write(b"abc")
    assert "disk full" not in str(info.value) and "ermission" in str(info.value)


def test_disk_full_while_building_a_directory_keeps_the_old_one(
    tmp_path, failing_writes, snapshot, leftovers
):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"old weights")
    before = snapshot(out)
    failing_writes()
    with pytest.raises(OutputWriteError) as info, atomic_dir(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text("{}")
        with atomic_file(tmp / "weights.bin") as fh:  # a nested atomic write fails
            fh.write(b"new weights" * 100)
    assert f"cannot write {out}:" in str(info.value)  # the output, not the temporary inside
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_a_failed_rename_puts_the_old_directory_back(tmp_path, monkeypatch, snapshot, leftovers):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"old weights")
    before = snapshot(out)
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(factedit.paths.os, "replace", replace)
    with pytest.raises(OutputWriteError, match="disk full"), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"new weights")
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_ctrl_c_while_building_a_directory_leaves_nothing(tmp_path, leftovers):
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "partial.bin").write_bytes(b"x")
        raise KeyboardInterrupt
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


def test_outputs_get_the_usual_permissions_not_the_temporarys(tmp_path):
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.json", "{}")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
        kept = tmp_path / "shared.json"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"
