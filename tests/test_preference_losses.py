"""Preference losses against numpy references on fixed scores."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.objectives import pairwise as P


def _np_log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def test_bradley_terry_matches_numpy_and_log2_at_tie():
    rc = np.array([2.0, -1.0, 0.3, 5.0])
    rr = np.array([1.0, 1.0, 0.3, -5.0])
    np.testing.assert_allclose(np.asarray(P.bradley_terry(jnp.asarray(rc), jnp.asarray(rr))),
                               -_np_log_sigmoid(rc - rr), rtol=1e-6)
    assert float(P.bradley_terry(jnp.float32(0.7), jnp.float32(0.7))) == pytest.approx(np.log(2), rel=1e-6)


def _np_plackett_luce(scores, n_valid):
    s = scores[:n_valid]
    return -sum(s[i] - np.log(np.sum(np.exp(s[i:]))) for i in range(n_valid))


def test_plackett_luce_matches_numpy_with_masked_tails():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 4)) * 2
    n_valid = np.array([4, 3, 2, 1, 4])
    mask = (np.arange(4)[None] < n_valid[:, None]).astype(np.float32)
    got = np.asarray(P.plackett_luce(jnp.asarray(scores), jnp.asarray(mask)))
    want = [_np_plackett_luce(scores[b], n_valid[b]) for b in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_plackett_luce_with_two_items_is_bradley_terry():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(8, 2)) * 3
    pl = P.plackett_luce(jnp.asarray(s), jnp.ones((8, 2)))
    bt = P.bradley_terry(jnp.asarray(s[:, 0]), jnp.asarray(s[:, 1]))
    np.testing.assert_allclose(np.asarray(pl), np.asarray(bt), rtol=1e-6)


def test_plackett_luce_probabilities_of_all_orderings_sum_to_one():
    s = np.array([0.5, -1.0, 2.0])
    total = 0.0
    for perm in itertools.permutations(range(3)):
        total += float(np.exp(-P.plackett_luce(jnp.asarray(s[list(perm)])[None], jnp.ones((1, 3)))[0]))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_binary_discrimination_matches_numpy():
    rc = np.array([2.0, -1.0, 0.0])
    rr = np.array([1.0, 3.0, 0.0])
    want = -_np_log_sigmoid(rc) - _np_log_sigmoid(-rr)
    np.testing.assert_allclose(np.asarray(P.binary_discrimination(jnp.asarray(rc), jnp.asarray(rr))), want,
                               rtol=1e-6)


def test_pair_accuracy():
    got = P.pair_accuracy(jnp.asarray([1.0, 0.0, 2.0]), jnp.asarray([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(got), [1.0, 0.0, 0.5])
