"""Sampler: cached decode vs full re-forward, padding invariance, log-probs, truncation sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers_runtime import VOCAB, left_padded, lm_logits, sharp_params, tiny_cfg
from rlhfjax.models import api, stack_layers
from rlhfjax.sampling import SamplingConfig, process_logits, sample

PROMPTS = [[5, 9, 3, 17], [22, 7], [40, 41, 42, 43, 44, 45], [11]]


def greedy_by_reforward(params, cfg, rows, n):
    """Independent reference: no cache; re-run the whole unpadded sequence for every new token.

    Sequences live right-aligned-free in a fixed buffer (real tokens first, then unused slots with
    mask 0) so one compiled forward serves every step; causality makes the unused tail irrelevant.
    """
    width = max(map(len, rows)) + n
    fwd = jax.jit(lambda t, m: lm_logits(params, cfg, t, m))
    outs = []
    for r in rows:
        seq = list(r)
        for _ in range(n):
            t = np.zeros((1, width), np.int32)
            t[0, :len(seq)] = seq
            m = (np.arange(width) < len(seq)).astype(np.int32)[None]
            seq.append(int(jnp.argmax(fwd(t, m)[0, len(seq) - 1])))
        outs.append(seq[len(r):])
    return np.array(outs)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_cached_equals_reforward_and_padding_invariant(family):
    cfg = tiny_cfg(family)
    params = sharp_params(cfg)
    n = 8
    ref = greedy_by_reforward(params, cfg, PROMPTS, n)
    sc = SamplingConfig(max_new_tokens=n, greedy=True)
    for P in (6, 9):  # different left-padding amounts
        toks, mask = left_padded(PROMPTS, P)
        out = sample(params, toks, mask, jax.random.PRNGKey(0), model_cfg=cfg, cfg=sc)
        np.testing.assert_array_equal(np.asarray(out.tokens_BxN), ref)
        assert np.all(np.asarray(out.response_mask_BxN) == 1)


def test_eos_stops_and_masks_rest():
    cfg = tiny_cfg("llama")
    params = sharp_params(cfg)
    toks, mask = left_padded(PROMPTS, 6)
    free = sample(params, toks, mask, jax.random.PRNGKey(0), model_cfg=cfg,
                  cfg=SamplingConfig(max_new_tokens=8, greedy=True))
    eos = int(free.tokens_BxN[0, 2])  # make row 0's third token the EOS
    out = sample(params, toks, mask, jax.random.PRNGKey(0), model_cfg=cfg,
                 cfg=SamplingConfig(max_new_tokens=8, greedy=True, eos_id=eos, pad_id=63))
    t, m = np.asarray(out.tokens_BxN), np.asarray(out.response_mask_BxN)
    ft = np.asarray(free.tokens_BxN)
    for b in range(len(PROMPTS)):
        hits = np.nonzero(ft[b] == eos)[0]
        end = hits[0] + 1 if len(hits) else 8
        np.testing.assert_array_equal(t[b, :end], ft[b, :end])
        assert m[b, :end].all() and not m[b, end:].any()
        assert (t[b, end:] == 63).all()
        assert (np.asarray(out.policy_logp_BxN)[b, end:] == 0).all()
    assert m.sum() < m.size  # some row really stopped early


@pytest.mark.parametrize("scanned", [False, True], ids=["per_layer", "scanned"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logps_match_teacher_forcing(family, scanned):
    cfg = tiny_cfg(family)
    params = sharp_params(cfg, scale=2.0)  # flatter distributions: sampling is non-trivial
    if scanned:  # one scanned block over stacked params, a stacked KV cache, per-block remat
        cfg = cfg.replace(scan_layers=True, remat_policy="nothing_saveable")
        params = stack_layers(params, cfg.num_layers)
    toks, mask = left_padded(PROMPTS, 7)
    temp = SamplingConfig(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.9, eos_id=3)
    out = sample(params, toks, mask, jax.random.PRNGKey(1), model_cfg=cfg, cfg=temp)
    tf = api.token_logp(params, cfg, out.sequence_BxL, out.sequence_mask_BxL, start=7)
    np.testing.assert_allclose(np.asarray(out.policy_logp_BxN), np.asarray(tf), atol=1e-5, rtol=0)
    # Sampling-distribution log-probs: recompute from teacher-forced logits with the same transform.
    logits = lm_logits(params, cfg, out.sequence_BxL, out.sequence_mask_BxL)[:, 6:-1]
    proc = jax.vmap(lambda l: process_logits(l, temp), in_axes=1, out_axes=1)(logits)
    lp = jnp.take_along_axis(jax.nn.log_softmax(proc, -1), out.tokens_BxN[..., None], -1)[..., 0]
    lp = lp * out.response_mask_BxN
    np.testing.assert_allclose(np.asarray(out.logp_BxN), np.asarray(lp), atol=1e-5, rtol=0)
    assert np.all(np.isfinite(np.asarray(out.logp_BxN)))
    # Same key -> same rollout; another key -> a different one.
    again = sample(params, toks, mask, jax.random.PRNGKey(1), model_cfg=cfg, cfg=temp)
    np.testing.assert_array_equal(np.asarray(again.tokens_BxN), np.asarray(out.tokens_BxN))
    other = sample(params, toks, mask, jax.random.PRNGKey(2), model_cfg=cfg, cfg=temp)
    assert not np.array_equal(np.asarray(other.tokens_BxN), np.asarray(out.tokens_BxN))


def test_num_samples_repeats_prompts_in_groups():
    cfg = tiny_cfg("llama")
    params = sharp_params(cfg, scale=2.0)
    toks, mask = left_padded(PROMPTS, 7)
    sc = SamplingConfig(max_new_tokens=6, temperature=1.0, eos_id=3)
    out = sample(params, toks, mask, jax.random.PRNGKey(4), model_cfg=cfg, cfg=sc, num_samples=3)
    rep = sample(params, jnp.repeat(toks, 3, 0), jnp.repeat(mask, 3, 0), jax.random.PRNGKey(4), model_cfg=cfg, cfg=sc)
    assert out.tokens_BxN.shape[0] == 3 * len(PROMPTS)
    np.testing.assert_array_equal(np.asarray(out.sequence_BxL), np.asarray(rep.sequence_BxL))
    prompts = np.asarray(out.sequence_BxL)[:, :7].reshape(len(PROMPTS), 3, 7)
    assert (prompts == prompts[:, :1]).all()  # rows [3i, 3i+3) share prompt i
    assert len({tuple(r) for r in np.asarray(out.tokens_BxN)[:3]}) > 1  # independent draws within a group


def _draws(logits_V, sc, n=4000):
    logits = jnp.tile(jnp.asarray(logits_V, jnp.float32)[None], (n, 1))
    proc = process_logits(logits, sc)
    return np.asarray(jax.random.categorical(jax.random.PRNGKey(0), proc, axis=-1))


def test_top_k_top_p_allowed_sets():
    # Known distribution: probs 0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02 (+ tiny rest).
    p = np.full(VOCAB, 1e-6)
    p[[10, 20, 30, 40, 50, 60, 5]] = [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02]
    logits = np.log(p / p.sum())
    d = _draws(logits, SamplingConfig(top_k=3))
    assert set(np.unique(d)) == {10, 20, 30}
    # Empirical frequencies follow the renormalised top-3 distribution.
    np.testing.assert_allclose(np.mean(d == 10), 0.4 / 0.8, atol=0.03)
    d = _draws(logits, SamplingConfig(top_p=0.75))  # 0.4 + 0.25 < 0.75 <= 0.8 -> three tokens
    assert set(np.unique(d)) == {10, 20, 30}
    d = _draws(logits, SamplingConfig(top_p=0.3))  # the top token alone already covers 0.3
    assert set(np.unique(d)) == {10}
    d = _draws(logits, SamplingConfig(top_k=5, top_p=0.95, temperature=3.0))
    assert set(np.unique(d)) <= {10, 20, 30, 40, 50} and len(np.unique(d)) == 5
    d = _draws(logits, SamplingConfig(temperature=4.0))  # no truncation: the tail is reachable
    assert len(np.unique(d)) > 7


def test_token_pick_equals_jax_categorical_and_argmax_bit_for_bit():
    """`sampling.categorical` / `first_argmax` (two plain reductions, for speed) pick exactly the tokens of
    `jax.random.categorical` / `jnp.argmax`: filtered (-inf) entries, ties, and all -inf rows included."""
    from rlhfjax.sampling import categorical, first_argmax

    for seed in range(40):
        key = jax.random.PRNGKey(seed)
        logits = 3.0 * jax.random.normal(key, (6, 50))
        logits = logits.at[:, seed % 7::7].set(-jnp.inf)  # top-k / top-p filtered tokens
        logits = logits.at[1].set(jnp.round(logits[1]))  # many ties
        np.testing.assert_array_equal(categorical(key, logits), jax.random.categorical(key, logits, axis=-1))
        np.testing.assert_array_equal(first_argmax(logits), jnp.argmax(logits, axis=-1))
    ties = jnp.array([[1.0, 3.0, 3.0, 0.0], [-jnp.inf] * 4, [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(first_argmax(ties), [1, 0, 0])
