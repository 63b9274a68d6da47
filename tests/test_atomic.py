"""Atomic outputs: nothing at the final path unless the write completed."""

from __future__ import annotations

import pytest

from cropchain.io.atomic import atomic_output, temporary_path


def test_success_renames(tmp_path):
    target = tmp_path / "sub" / "x.tif"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".tif" and tmp.name.startswith(".x.tmp-")
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["x.tif"]


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "x.tif"
    stale = temporary_path(target)
    stale.write_bytes(b"half-written by a killed job")
    other = temporary_path(tmp_path / "y.tif")
    other.write_bytes(b"another output's temporary")
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"data")
    assert not stale.exists() and other.exists()
