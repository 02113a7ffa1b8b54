"""train.run_cache.computed_once: computed under a key, reused only under the same key, stored atomically."""

import os

import numpy as np
import pytest

from rlhfjax.train.run_cache import computed_once


def test_stored_arrays_are_reused_only_under_their_key(tmp_path):
    path, calls = str(tmp_path / "normaliser.npz"), []

    def compute(value):
        def f():
            calls.append(value)
            return {"gain": np.float32(value), "bias": np.arange(3, dtype=np.float32) * value}
        return f

    got, info = computed_once(path, '{"policy": "A"}', compute(2.0), what="test")
    assert calls == [2.0] and not info["reused"] and float(got["gain"]) == 2.0
    again, info = computed_once(path, '{"policy": "A"}', compute(5.0), what="test")
    assert calls == [2.0] and info["reused"] and np.array_equal(again["bias"], [0.0, 2.0, 4.0])
    other, info = computed_once(path, '{"policy": "B"}', compute(3.0), what="test")
    assert calls == [2.0, 3.0] and not info["reused"] and float(other["gain"]) == 3.0
    assert os.listdir(tmp_path) == ["normaliser.npz"]  # replaced in place, nothing left beside it


def test_a_failed_computation_keeps_the_stored_arrays(tmp_path):
    path = str(tmp_path / "column.npz")
    computed_once(path, "A", lambda: {"x": np.ones(2)}, what="test")

    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        computed_once(path, "B", broken, what="test")
    got, info = computed_once(path, "A", lambda: {"x": np.zeros(2)}, what="test")
    assert info["reused"] and np.array_equal(got["x"], [1.0, 1.0])
