"""The shared math of objectives/core.py against numpy references, Monte Carlo and hand-computed examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.models import api
from rlhfjax.objectives import core as P


def _contiguous_mask(starts, lengths, T):
    t = np.arange(T)[None]
    return ((t >= np.asarray(starts)[:, None]) & (t < (np.asarray(starts) + np.asarray(lengths))[:, None]))


def test_kl_estimators_match_numpy_and_k3_nonnegative():
    rng = np.random.default_rng(2)
    logp = rng.normal(size=(3, 7)).astype(np.float32) * 2
    ref = rng.normal(size=(3, 7)).astype(np.float32) * 2
    d = logp.astype(np.float64) - ref
    r = np.exp(-d)
    for kind, want in [("k1", d), ("k2", 0.5 * d**2), ("k3", (r - 1) - np.log(r))]:
        np.testing.assert_allclose(np.asarray(P.kl_per_token(logp, ref, kind)), want, rtol=1e-4, atol=1e-6)
    k3 = np.asarray(P.kl_per_token(logp, ref, "k3"))
    assert np.all(k3 >= 0)
    assert np.all(np.asarray(P.kl_per_token(logp, logp, "k3")) == 0)
    with pytest.raises(ValueError):
        P.kl_per_token(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_monte_carlo():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    true_kl = float(np.sum(p * np.log(p / q)))
    samples = np.random.default_rng(3).choice(4, size=200_000, p=p)
    logp = np.log(p)[samples][None].astype(np.float32)
    ref = np.log(q)[samples][None].astype(np.float32)
    for kind in ("k1", "k3"):
        est = float(jnp.mean(P.kl_per_token(logp, ref, kind)))
        assert est == pytest.approx(true_kl, abs=0.01), kind  # std error ≈ 0.0015
    # k2 is biased here: E[½ d²] differs from the KL by far more than the Monte Carlo error
    assert abs(float(jnp.mean(P.kl_per_token(logp, ref, "k2"))) - true_kl) > 0.02


def test_reward_normalisation_and_whiten():
    scores = np.random.default_rng(5).normal(3.0, 4.0, size=512).astype(np.float32)
    gain, bias = P.fit_reward_normalisation(scores)
    z = np.asarray(P.normalise(scores, gain, bias))
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1.0, abs=1e-5)
    gain, bias = P.fit_reward_normalisation(scores, target_mean=2.0, target_std=0.5)
    z = np.asarray(P.normalise(scores, gain, bias))
    assert z.mean() == pytest.approx(2.0, abs=1e-5) and z.std() == pytest.approx(0.5, abs=1e-5)

    x = np.random.default_rng(6).normal(5.0, 3.0, size=(4, 6)).astype(np.float32)
    mask = _contiguous_mask([0, 2, 1, 3], [6, 3, 4, 2], 6)
    x[~mask] = 1e4
    w = np.asarray(P.whiten(x, mask))
    assert abs(w[mask].mean()) < 1e-5 and w[mask].std() == pytest.approx(1.0, abs=1e-4)  # biased std
    assert np.all(w[~mask] == 0)
    w = np.asarray(P.whiten(x, mask, shift_mean=False))
    assert w[mask].mean() == pytest.approx(x[mask].mean(), rel=1e-5)
    assert w[mask].std() == pytest.approx(1.0, abs=1e-4)


def test_sequence_kl_sums_the_masked_estimates():
    rng = np.random.default_rng(9)
    logp, ref = rng.normal(size=(2, 2, 5)).astype(np.float32)
    mask = _contiguous_mask([1, 0], [3, 5], 5)
    logp[~mask] = np.nan  # padding garbage must not leak
    for kind in ("k1", "k3"):
        want = np.where(mask, np.asarray(P.kl_per_token(np.where(mask, logp, 0), ref, kind)), 0).sum(1)
        np.testing.assert_allclose(np.asarray(P.sequence_kl(logp, ref, mask, kind)), want, rtol=1e-6)


def test_rollout_logp_takes_the_own_pass_on_the_first_step_only():
    logp = jnp.asarray(np.random.default_rng(10).normal(size=(4, 3)), jnp.float32)
    old = logp + 1.0
    batch = {"old_logp_BxN": old, "update_step_B": jnp.array([0, 0, 1, 2])}
    got = np.asarray(P.rollout_logp(batch, logp, own_first_pass=True))
    np.testing.assert_array_equal(got[:2], np.asarray(logp)[:2])
    np.testing.assert_array_equal(got[2:], np.asarray(old)[2:])
    np.testing.assert_array_equal(np.asarray(P.rollout_logp(batch, logp, own_first_pass=False)), np.asarray(old))
    # the own pass enters with its gradient stopped: the ratio's gradient flows through the new log-probs only
    g = jax.grad(lambda lp: jnp.sum(P.rollout_logp(batch, lp, True)))(logp)
    assert float(jnp.abs(g).sum()) == 0.0
    with pytest.raises(ValueError, match="remat=True"):
        P.check_first_ratio("remat", remat=False, section="grpo")


def test_entropy_of_masked_vocabularies_is_finite_and_matches_numpy():
    V = 5
    logits = np.random.default_rng(8).normal(size=(2, V)).astype(np.float32)
    logits[0] = 0.0  # uniform: log V
    logits[1, :3] = -np.inf  # masked vocabulary entries must not produce NaN
    p1 = np.exp(logits[1] - np.log(np.sum(np.exp(logits[1]))))
    h1 = -np.sum(np.where(p1 > 0, p1 * np.log(np.where(p1 > 0, p1, 1)), 0))
    np.testing.assert_allclose(np.asarray(api.entropy(logits)), [np.log(V), h1], rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda lg: api.entropy(lg).sum())(jnp.asarray(logits)))))
