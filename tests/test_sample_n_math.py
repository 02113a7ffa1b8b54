"""The math of the sample-N methods against numpy and analytic values: SuperHF's filter and KL prior,
best-of-n's KL, RLOO / GRPO advantages and loss aggregations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_runtime import np_log_softmax

from rlhfjax.analysis import best_of_n
from rlhfjax.models import api, init_params, preset
from rlhfjax.objectives import group_pg, superhf


# --------------------------------------------------------------------------------------------
# SuperHF: the filter


def numpy_top_k(scores, valid, S, k):
    out = []
    for g in range(len(scores) // S):
        rows = range(g * S, (g + 1) * S)
        # valid rows first, then higher score, then lower row index
        out += sorted(rows, key=lambda i: (not valid[i], -scores[i], i))[:k]
    return np.array(out)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_filter_keeps_exactly_the_top_k_per_prompt_with_ties_to_the_earlier_row(k):
    rng = np.random.default_rng(k)
    S = 5
    scores = rng.integers(0, 3, size=4 * S).astype(np.float32)  # few distinct values: many ties
    valid = rng.random(4 * S) > 0.2
    got = np.asarray(superhf.top_k_per_group(jnp.asarray(scores), S, k))
    np.testing.assert_array_equal(got, numpy_top_k(scores, np.ones_like(valid), S, k))
    got = np.asarray(superhf.top_k_per_group(jnp.asarray(scores), S, k, jnp.asarray(valid)))
    np.testing.assert_array_equal(got, numpy_top_k(scores, valid, S, k))
    assert (got // S == np.repeat(np.arange(4), k)).all()  # k rows from each prompt, in prompt order


def test_filter_rejects_k_outside_the_group():
    with pytest.raises(ValueError):
        superhf.top_k_per_group(jnp.zeros(8), 4, 5)


# --------------------------------------------------------------------------------------------
# SuperHF: the KL prior


def test_vocab_kl_matches_numpy_in_both_directions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 7)) * 2, rng.normal(size=(2, 3, 7))
    la, lb = np_log_softmax(a), np_log_softmax(b)
    want_ab = (np.exp(la) * (la - lb)).sum(-1)
    np.testing.assert_allclose(api.vocab_kl(jnp.asarray(a), jnp.asarray(b)), want_ab, rtol=1e-5, atol=1e-6)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    policy, ref = {"logits_BxNxV": jnp.asarray(a)}, {"logits_BxNxV": jnp.asarray(b)}
    for kind, kl in (("ref_policy", (np.exp(lb) * (lb - la)).sum(-1)), ("policy_ref", want_ab)):
        # policy logits a, reference logits b; per completion: mean over its tokens, clamped, weighted by length
        per_token = superhf.prior_kl(None, policy, None, ref, None, kind)
        np.testing.assert_allclose(per_token, kl, rtol=1e-5, atol=1e-6)
        prior, mean_B = superhf.kl_prior(per_token, jnp.asarray(mask))
        want_mean = np.array([kl[0, :2].mean(), kl[1, :1].mean()])
        np.testing.assert_allclose(mean_B, want_mean, rtol=1e-5)
        np.testing.assert_allclose(prior, 2 * want_mean[0] + 1 * want_mean[1], rtol=1e-5)


def test_kl_prior_is_exactly_zero_at_the_reference():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 9)), jnp.float32)
    prior, mean_B = superhf.kl_prior(api.vocab_kl(logits, logits), jnp.ones((2, 4)))
    assert float(prior) == 0.0 and np.all(np.asarray(mean_B) == 0.0)


def tiny_policy():
    cfg = preset("llama", vocab_size=11, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                 intermediate_size=32, max_position_embeddings=16)
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


def test_superhf_loss_is_nll_plus_beta_kl_against_numpy():
    cfg, params = tiny_policy()
    ref = init_params(cfg, jax.random.PRNGKey(1))
    rng = np.random.default_rng(2)
    seq = jnp.asarray(rng.integers(1, 11, size=(3, 8)))
    smask = jnp.ones((3, 8), jnp.int32)
    rmask = jnp.asarray([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    batch = {"sequence_BxL": seq, "sequence_mask_BxL": smask, "response_mask_BxN": rmask}
    loss_cfg = superhf.SuperHFLossConfig(model=cfg, num_response=3, kl_coef=0.35)
    total, count, metrics = jax.jit(superhf.loss_fn, static_argnames="config")(
        {"policy": params}, batch, frozen=ref, config=loss_cfg, rng=None)
    # independent reference: full logits from the model layer, numpy log-softmax and sums
    lp = np_log_softmax(np.asarray(api.lm_logits(params, cfg, seq, smask), np.float64))[:, 4:7]
    lr = np_log_softmax(np.asarray(api.lm_logits(ref, cfg, seq, smask), np.float64))[:, 4:7]
    tok = np.asarray(seq)[:, 5:8]
    m = np.asarray(rmask).astype(bool)
    nll = -np.take_along_axis(lp, tok[..., None], -1)[..., 0][m].sum()
    kl = (np.exp(lr) * (lr - lp)).sum(-1)  # KL(π_ref ‖ π_θ) per token
    prior = sum(m[i].sum() * max(kl[i][m[i]].mean(), 0.0) for i in range(3))
    assert float(count) == m.sum()
    np.testing.assert_allclose(float(total), nll + 0.35 * prior, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["superhf/nll"]), nll / m.sum(), rtol=1e-5)
    # policy = reference: the prior term vanishes exactly
    _, _, at_ref = superhf.loss_fn({"policy": params}, batch, frozen=params, config=loss_cfg, rng=None)
    assert float(at_ref["superhf/kl_prior"]) == 0.0


# --------------------------------------------------------------------------------------------
# Best-of-n KL


def test_best_of_n_analytic_kl_matches_monte_carlo_on_a_categorical():
    rng = np.random.default_rng(0)
    K, n, trials = 400, 4, 200_000
    p = rng.dirichlet(np.full(K, 5.0))  # no outcome dominates: repeats are rare, as the formula assumes
    reward = rng.normal(size=K)
    draws = rng.choice(K, size=(trials, n), p=p)
    best = np.take_along_axis(draws, reward[draws].argmax(1)[:, None], 1)[:, 0]
    q_mc = np.bincount(best, minlength=K) / trials
    live = q_mc > 0
    kl_mc = float(np.sum(q_mc[live] * np.log(q_mc[live] / p[live])))
    assert abs(kl_mc - best_of_n.analytic_kl(n)) < 0.02, (kl_mc, best_of_n.analytic_kl(n))
    # the exact law of the best of n agrees with the simulation outcome by outcome
    np.testing.assert_allclose(best_of_n.bon_distribution(p, reward, n), q_mc, atol=4e-3)
    assert abs(best_of_n.exact_kl(p, reward, n) - best_of_n.analytic_kl(n)) < 0.01


def test_repeated_completions_make_the_true_kl_smaller_than_the_analytic_bound():
    p, reward = np.array([0.9, 0.05, 0.05]), np.array([0.0, 1.0, 2.0])
    q = 1 - 0.95 ** 8, 0.95 ** 8 - 0.9 ** 8, 0.9 ** 8  # best of 8 by hand: top, middle, bottom outcome
    want = sum(qi * np.log(qi / pi) for qi, pi in zip(q, p[::-1]))
    np.testing.assert_allclose(best_of_n.exact_kl(p, reward, 8), want, rtol=1e-10)
    assert want < best_of_n.analytic_kl(8) - 0.4  # 0.68 vs 1.20 nats


def test_plugin_kl_merges_identical_completions():
    pool = ["a", "a", "b", "c", "c", "c"]
    scores = [0.5, 0.5, 2.0, -1.0, -1.0, -1.0]
    want = best_of_n.exact_kl(np.array([2, 1, 3]) / 6, np.array([0.5, 2.0, -1.0]), 3)
    assert best_of_n.plugin_kl(pool, scores, 3) == pytest.approx(want)
    # a large pool of distinct samples approaches the analytic value
    big = list(range(4096))
    assert best_of_n.plugin_kl(big, np.random.default_rng(0).normal(size=4096), 4) == pytest.approx(
        best_of_n.analytic_kl(4), abs=0.01)


def test_best_in_groups_against_a_loop():
    s = np.random.default_rng(3).normal(size=(3, 10))
    got = best_of_n.best_in_groups(s, 3)
    want = [[g * 3 + int(np.argmax(s[p, g * 3:(g + 1) * 3])) for g in range(3)] for p in range(3)]
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------------
# RLOO / GRPO


def test_rloo_advantages_by_hand():
    r = np.array([1.0, 2.0, 3.0, 6.0, 0.0, 0.0])  # two groups of 3
    want = [1 - 2.5, 2 - 2.0, 3 - 1.5, 6 - 0.0, 0 - 3.0, 0 - 3.0]
    np.testing.assert_allclose(group_pg.rloo_advantages(jnp.asarray(r), 3), want, rtol=1e-6)


def test_grpo_advantages_by_hand():
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    g1 = (np.array([1, 2, 3, 4.0]) - 2.5) / (np.std([1, 2, 3, 4.0], ddof=1) + 1e-4)
    np.testing.assert_allclose(group_pg.grpo_advantages(jnp.asarray(r), 4), [*g1, 0, 0, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(group_pg.grpo_advantages(jnp.asarray(r), 4, scale_by_std=False),
                               [-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0], rtol=1e-6)
    with pytest.raises(Exception):
        group_pg.grpo_advantages(jnp.asarray(r), 3)


def test_aggregations_against_numpy():
    loss = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    for how, want in (("token_mean", (10.0, 4.0)), ("sequence_mean", (2.0 + 4.0, 2.0)),
                      ("sequence_sum", (10.0, 2.0))):
        got = group_pg.aggregate(jnp.asarray(loss), jnp.asarray(mask), how)
        np.testing.assert_allclose([float(got[0]), float(got[1])], want)


@pytest.mark.parametrize("how", group_pg.AGGREGATIONS)
def test_group_loss_at_ratio_one_is_minus_the_aggregated_advantage(how):
    cfg, params = tiny_policy()
    rng = np.random.default_rng(4)
    seq = jnp.asarray(rng.integers(1, 11, size=(4, 8)))
    smask = jnp.ones((4, 8), jnp.int32)
    rmask = jnp.asarray([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    logp = api.policy_outputs(params, cfg, seq, smask, start=5)["logp_BxN"]
    adv = jnp.asarray([0.5, -1.0, 2.0, 0.25])
    batch = {"sequence_BxL": seq, "sequence_mask_BxL": smask, "response_mask_BxN": rmask, "old_logp_BxN": logp,
             "advantages_B": adv, "ref_logp_BxN": logp}
    loss_cfg = group_pg.GroupLossConfig(model=cfg, num_response=3, kl_coef=0.1, aggregation=how, remat=False)
    total, count, metrics = group_pg.loss_fn({"policy": params}, batch, frozen=None, config=loss_cfg, rng=None)
    n = np.asarray(rmask).sum(1)
    a = np.asarray(adv)
    want = {"token_mean": (-(a * n).sum(), n.sum()), "sequence_mean": (-a.sum(), 4),
            "sequence_sum": (-(a * n).sum(), 4)}[how]
    np.testing.assert_allclose([float(total), float(count)], want, rtol=1e-5)
    assert float(metrics["kl/loss_token_mean"]) == 0.0 and float(metrics["ppo/ratio_max"]) == 1.0
