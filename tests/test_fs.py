"""Atomic writes: all or nothing, private by default, and a clear error for a folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sgx_iot._fs import atomic_write, atomic_write_text


def test_write_replaces_the_whole_file_with_private_rights(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write_text(target, "old")
    atomic_write(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_folder_as_target_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError) as err:
        atomic_write(tmp_path, b"x")
    assert err.value.filename == str(tmp_path)
