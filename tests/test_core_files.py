"""core.files.atomic_write: the old file or the new one, never a torn one or a leftover."""

import os

import pytest

from guardrails.core.files import atomic_write


def test_replaces_the_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as fh:
        fh.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, prefix=".x-") as fh:
        fh.write(b"half")
        raise RuntimeError("disk gone")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_the_temporary_lives_beside_the_target_until_the_rename(tmp_path):
    path = tmp_path / "a.bin"
    with atomic_write(path) as fh:
        fh.write(b"x")
        (tmp,) = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert tmp.startswith(".a.bin.") and not path.exists()
    assert path.read_bytes() == b"x"
