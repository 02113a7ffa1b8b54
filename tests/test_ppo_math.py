"""PPO-RLHF math (objectives/ppo.py) against numpy / Python-loop references and hand-computed examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.objectives import kl_control as K
from rlhfjax.objectives import core
from rlhfjax.objectives import ppo as P


def _contiguous_mask(starts, lengths, T):
    t = np.arange(T)[None]
    return ((t >= np.asarray(starts)[:, None]) & (t < (np.asarray(starts) + np.asarray(lengths))[:, None]))


def _np_gae(rewards, values, mask, gamma, lam):
    """Plain double loop over rows and response tokens; episode ends after the last response token."""
    B, T = rewards.shape
    adv, ret = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        idx = np.nonzero(mask[b])[0]
        last_adv, next_v = 0.0, 0.0
        for t in reversed(idx):
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            last_adv = delta + gamma * lam * last_adv
            adv[b, t], ret[b, t], next_v = last_adv, last_adv + values[b, t], values[b, t]
    return adv, ret


# ---- GAE ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma,lam", [(0.9, 0.8), (1.0, 0.95), (0.99, 1.0)])
def test_gae_matches_python_loop_with_ragged_offsets(gamma, lam):
    rng = np.random.default_rng(0)
    B, T = 6, 11
    mask = _contiguous_mask([0, 3, 5, 2, 10, 4], [11, 5, 6, 1, 1, 0], T)
    rewards = rng.normal(size=(B, T)).astype(np.float32)
    values = rng.normal(size=(B, T)).astype(np.float32)
    # garbage outside the mask must not leak in
    rewards[~mask], values[~mask] = 1e6, np.nan
    adv, ret = jax.jit(lambda r, v, m: P.gae(r, v, m, gamma=gamma, lam=lam))(rewards, values, mask)
    want_adv, want_ret = _np_gae(np.where(mask, rewards, 0), np.where(mask, values, 0), mask, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(adv)[~mask] == 0) and np.all(np.asarray(ret)[~mask] == 0)


def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    rng = np.random.default_rng(1)
    B, T = 4, 9
    mask = _contiguous_mask([2, 0, 4, 1], [5, 9, 3, 7], T)
    rewards = np.where(mask, rng.normal(size=(B, T)), 0).astype(np.float32)
    values = np.where(mask, rng.normal(size=(B, T)), 0).astype(np.float32)
    adv, ret = P.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    reward_to_go = np.where(mask, np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1], 0)
    np.testing.assert_allclose(np.asarray(ret), reward_to_go, rtol=1e-5, atol=1e-5)
    want_adv = np.where(mask, reward_to_go - values, 0)
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)


def test_gae_skips_gaps_inside_a_row():
    rewards = np.array([[1.0, 5.0, 2.0, 0.0]], np.float32)
    values = np.array([[0.5, 9.0, 0.25, 0.0]], np.float32)
    mask = np.array([[1, 0, 1, 0]], bool)
    adv, _ = P.gae(rewards, values, mask, gamma=0.5, lam=0.5)
    # t=2: delta = 2 − 0.25 = 1.75; t=0: delta = 1 + 0.5·0.25 − 0.5 = 0.625, A = 0.625 + 0.25·1.75
    np.testing.assert_allclose(np.asarray(adv), [[0.625 + 0.25 * 1.75, 0.0, 1.75, 0.0]], rtol=1e-6)


# ---- shaped rewards -----------------------------------------------------------------------------

def _shaped_inputs():
    rng = np.random.default_rng(4)
    B, T = 4, 8
    mask = _contiguous_mask([1, 0, 3, 5], [4, 8, 2, 3], T)
    logp = rng.normal(size=(B, T)).astype(np.float32)
    ref = rng.normal(size=(B, T)).astype(np.float32)
    logp[~mask] = np.nan  # padding garbage must not leak
    score = np.array([1.5, -3.0, 7.0, 0.2], np.float32)
    return score, logp, ref, mask


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_shaped_rewards_identity_and_score_at_last_token(kind):
    score, logp, ref, mask = _shaped_inputs()
    beta = 0.1
    out = jax.jit(lambda *a: P.shaped_rewards(*a, kl_coef=beta, kl_kind=kind))(score, logp, ref, mask)
    rewards, kl, score_BxT = map(np.asarray, (out.rewards_BxT, out.kl_BxT, out.score_BxT))
    last = np.zeros_like(mask)
    last[np.arange(4), [4, 7, 4, 7]] = True
    # the logged KL is exactly the penalised one
    np.testing.assert_array_equal(np.asarray(out.kl_penalty_BxT), -np.float32(beta) * kl)
    np.testing.assert_array_equal(rewards[~last], (-np.float32(beta) * kl)[~last])
    np.testing.assert_allclose(rewards[last], (-np.float32(beta) * kl + score_BxT)[last], rtol=1e-6)
    np.testing.assert_array_equal(score_BxT[last], score)
    assert np.all(score_BxT[~last] == 0)
    assert np.all(rewards[~mask] == 0) and np.all(kl[~mask] == 0)
    np.testing.assert_allclose(np.asarray(out.kl_seq_B), kl.sum(1), rtol=1e-6)
    want_kl = np.asarray(core.kl_per_token(np.where(mask, logp, 0), ref, kind))
    np.testing.assert_allclose(kl[mask], want_kl[mask], rtol=1e-6)
    m = out.metrics(beta)
    assert float(m["kl/seq_mean"]) == pytest.approx(kl.sum(1).mean(), rel=1e-5)


def test_shaped_rewards_score_clip_and_no_eos_penalty():
    score, logp, ref, mask = _shaped_inputs()
    has_eos = np.array([True, False, True, True])
    out = P.shaped_rewards(score, logp, ref, mask, kl_coef=0.0, score_clip=2.0, no_eos_penalty=-1.0,
                           has_eos_B=has_eos)
    np.testing.assert_allclose(np.asarray(out.score_B), [1.5, -1.0, 2.0, 0.2])
    # with β = 0 the rewards are exactly the processed score at the last token
    np.testing.assert_allclose(np.asarray(out.rewards_BxT).sum(1), [1.5, -1.0, 2.0, 0.2])
    out = P.shaped_rewards(score, logp, ref, mask, kl_coef=0.0, score_clip=2.0)
    np.testing.assert_allclose(np.asarray(out.score_B), [1.5, -2.0, 2.0, 0.2])


# ---- PPO losses ---------------------------------------------------------------------------------

def test_policy_loss_on_policy_is_minus_mean_advantage():
    rng = np.random.default_rng(7)
    logp = rng.normal(size=(3, 5)).astype(np.float32)
    adv = rng.normal(size=(3, 5)).astype(np.float32)
    mask = _contiguous_mask([0, 1, 2], [5, 3, 2], 5)
    total, count, m = P.ppo_policy_loss(logp, logp, adv, mask)
    assert float(count) == mask.sum()
    assert float(total / count) == pytest.approx(-adv[mask].mean(), rel=1e-6)
    assert float(m["ppo/ratio_mean"]) == 1.0 and float(m["ppo/ratio_max"]) == 1.0
    assert float(m["ppo/clipfrac"]) == 0.0 and float(m["ppo/approx_kl"]) == 0.0


def test_policy_loss_hand_example_clips_both_sides_and_zero_grad_when_clipped():
    ratios = np.array([[1.5, 0.5, 1.5, 0.5, 1.1, 3.0]], np.float32)
    adv = np.array([[1.0, -1.0, -1.0, 1.0, 2.0, 5.0]], np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 0]], bool)
    old = np.zeros_like(ratios)
    logp = np.log(ratios)
    # token: A>0,ρ>1+ε → clipped −1.2; A<0,ρ<1−ε → clipped 0.8; A<0,ρ>1+ε → unclipped 1.5;
    #        A>0,ρ<1−ε → unclipped −0.5; inside → −2.2; masked token ignored
    want = np.array([-1.2, 0.8, 1.5, -0.5, -2.2])
    total, count, m = P.ppo_policy_loss(logp, old, adv, mask, clip=0.2)
    assert float(total) == pytest.approx(want.sum(), rel=1e-6) and float(count) == 5
    assert float(m["ppo/clipfrac"]) == pytest.approx(2 / 5)
    assert float(m["ppo/ratio_max"]) == pytest.approx(1.5)
    want_kl = np.mean((ratios - 1 - np.log(ratios))[0, :5])
    assert float(m["ppo/approx_kl"]) == pytest.approx(want_kl, rel=1e-5)
    grad = np.asarray(jax.grad(lambda lp: P.ppo_policy_loss(lp, old, adv, mask)[0])(jnp.asarray(logp)))
    np.testing.assert_array_equal(grad[0, [0, 1, 5]], 0.0)
    # d(−Aρ)/d logp = −Aρ on active unclipped tokens
    np.testing.assert_allclose(grad[0, [2, 3, 4]], (-adv * ratios)[0, [2, 3, 4]], rtol=1e-6)


def test_value_loss_hand_example():
    old = np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)
    v = np.array([[1.0, 1.0, 0.1, 7.0]], np.float32)
    ret = np.array([[2.0, 0.0, 0.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 1, 0]], bool)
    # t0: v_clip=0.2 → max(1, 3.24) = 3.24 (clipped active); t1: v_clip=0.2 → max(1, 0.04) = 1;
    # t2: inside the clip range → 0.01; t3 masked
    total, count, m = P.value_loss(v, old, ret, mask, clip=0.2)
    assert float(total) == pytest.approx(0.5 * (3.24 + 1.0 + 0.01), rel=1e-6) and float(count) == 3
    assert float(m["value/clipfrac"]) == pytest.approx(1 / 3)


def test_explained_variance():
    rng = np.random.default_rng(8)
    ret = rng.normal(size=(4, 6)).astype(np.float32)
    mask = _contiguous_mask([0, 1, 2, 0], [6, 4, 3, 2], 6)
    assert float(P.explained_variance(ret, ret, mask)) == pytest.approx(1.0)
    const = np.full_like(ret, ret[mask].mean())
    assert float(P.explained_variance(const, ret, mask)) == pytest.approx(0.0, abs=1e-5)


# ---- KL controllers -----------------------------------------------------------------------------

def test_adaptive_kl_direction_bounds_and_jit():
    ctl = K.AdaptiveKL.create()  # 0.15, target 6, horizon 10k
    assert float(ctl.coef) == pytest.approx(0.15) and ctl.target == 6.0 and ctl.horizon == 10_000.0
    up = jax.jit(K.update)(ctl, 7.0, 512)
    assert float(up.coef) == pytest.approx(0.15 * (1 + (7 / 6 - 1) * 512 / 10_000), rel=1e-6)
    assert float(K.update(ctl, 5.0, 512).coef) < 0.15
    assert float(K.update(ctl, 6.0, 512).coef) == pytest.approx(0.15, rel=1e-7)
    # error clipped at ±0.2: a huge or zero KL moves β by at most 0.2 · n_steps / horizon
    assert float(K.update(ctl, 1e6, 512).coef) == pytest.approx(0.15 * (1 + 0.2 * 512 / 10_000), rel=1e-6)
    assert float(K.update(ctl, 0.0, 512).coef) == pytest.approx(0.15 * (1 - 0.2 * 512 / 10_000), rel=1e-6)
    fixed = K.FixedKL.create(0.05)
    assert float(jax.jit(K.update)(fixed, 100.0, 512).coef) == pytest.approx(0.05)
    leaves = jax.tree_util.tree_leaves(ctl)
    assert len(leaves) == 1 and leaves[0].dtype == jnp.float32  # only β is state (checkpointed)
