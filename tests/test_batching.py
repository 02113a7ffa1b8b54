"""data/batching.py's fixed-size batches for evals and one-off passes (sampling, scoring, reference columns)."""

from rlhfjax.data.batching import padded_batches


def test_padded_batches_keep_order_pad_only_the_last_and_count_the_real_rows():
    got = list(padded_batches(list("abcdefg"), 3))
    assert got == [(0, ["a", "b", "c"], 3), (3, ["d", "e", "f"], 3), (6, ["g", None, None], 1)]
    assert list(padded_batches(range(4), 2)) == [(0, [0, 1], 2), (2, [2, 3], 2)]  # any sequence; exact fit: no pad
    assert list(padded_batches([], 5)) == []
