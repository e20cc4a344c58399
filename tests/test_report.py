"""Atomic writes of reports and folders: a reader sees the old content or the new, never half of it."""

import pytest

from hf_methods.report import write_folder_atomic, write_text_atomic


def test_write_text_atomic(tmp_path):
    write_text_atomic(tmp_path / "r.md", "one")
    write_text_atomic(tmp_path / "r.md", "two")
    assert (tmp_path / "r.md").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["r.md"]


def test_write_folder_atomic_replaces_or_keeps_the_first(tmp_path):
    target = tmp_path / "sub" / "model"

    def writer(text):
        return lambda folder: (folder / "weights.txt").write_text(text)

    assert write_folder_atomic(target, writer("one"))  # parents are created
    assert write_folder_atomic(target, writer("two"))  # replace=True: swapped in
    assert (target / "weights.txt").read_text() == "two"
    assert not write_folder_atomic(target, writer("three"), replace=False)  # the existing folder wins
    assert (target / "weights.txt").read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temporary or old folder left


def test_write_folder_atomic_leaves_nothing_when_writing_fails(tmp_path):
    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(tmp_path / "model", broken)
    assert list(tmp_path.iterdir()) == []
    write_folder_atomic(tmp_path / "model", lambda folder: (folder / "a").write_text("a"))
    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(tmp_path / "model", broken)
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (tmp_path / "model" / "a").read_text() == "a"
