"""rlhfjax.atomic_files: a target is the old one or the whole new one, and a failed write leaves nothing behind."""

import os

import pytest

from rlhfjax.atomic_files import atomic_open, atomic_path


def test_a_file_is_replaced_whole_or_left_as_it_was(tmp_path):
    path = str(tmp_path / "summary.json")
    with atomic_open(path) as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half of the new")
            assert open(path).read() == "old"  # nothing visible before the block ends
            raise RuntimeError("killed mid-write")
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]  # the partial write is gone
    with atomic_open(path, "wb") as f:
        f.write(b"new")
    assert open(path).read() == "new" and os.listdir(tmp_path) == ["summary.json"]


def test_a_directory_appears_only_when_complete(tmp_path):
    path = str(tmp_path / "model")
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "config.json"), "w").write("{}")
            raise OSError("disk full")
    assert os.listdir(tmp_path) == []
    with atomic_path(path) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "config.json"), "w").write("{}")
    assert os.listdir(path) == ["config.json"] and os.listdir(tmp_path) == ["model"]


def test_jsonl_writes_are_atomic(tmp_path):
    """data.labelling.write_jsonl (tasks, labels, comparisons, an iterate run's logs): a row source that fails
    part-way leaves the previous file whole."""
    from rlhfjax.data.labelling import read_jsonl, write_jsonl

    path = str(tmp_path / "tasks.jsonl")
    assert write_jsonl(path, [{"id": "a"}, {"id": "b"}]) == 2

    def rows():
        yield {"id": "c"}
        raise ValueError("a bad row")

    with pytest.raises(ValueError):
        write_jsonl(path, rows())
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}] and os.listdir(tmp_path) == ["tasks.jsonl"]
