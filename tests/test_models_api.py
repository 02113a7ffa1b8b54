"""models/api against numpy on the raw Linen outputs: alignment, temperature, masks, scores, values."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers_runtime import VOCAB, left_padded, lm_logits, np_log_softmax, sharp_params, tiny_cfg

from rlhfjax.models import ScalarModel, api, init_scalar_params, positions_from_mask

ROWS = [[5, 9, 11, 3, 7, 8], [4, 6], [12, 13, 14, 15]]


def test_token_and_response_logp_match_numpy():
    cfg = tiny_cfg("llama")
    params = sharp_params(cfg, scale=2.0)
    seq, mask = left_padded(ROWS, 8)
    logits = np.asarray(lm_logits(params, cfg, seq, mask), np.float64)
    T, start = 0.7, 3
    lp = np.take_along_axis(np_log_softmax(logits[:, start - 1:-1] / T), np.asarray(seq)[:, start:, None], -1)[..., 0]
    want = np.where(np.asarray(mask)[:, start:] == 1, lp, 0.0)
    got = api.token_logp(params, cfg, seq, mask, start=start, temperature=T)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)

    response = np.zeros_like(np.asarray(mask))
    response[:, -2:] = 1  # the last two tokens of every row
    total, count = api.response_logp(params, cfg, seq, mask, jnp.asarray(response))
    full = np.take_along_axis(np_log_softmax(logits[:, :-1]), np.asarray(seq)[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(total), full[:, -2:].sum(-1), atol=5e-5)
    np.testing.assert_array_equal(np.asarray(count), [2, 2, 2])


def test_scores_values_and_lm_head_scores():
    cfg = tiny_cfg("gpt2")
    params = init_scalar_params(cfg, jax.random.PRNGKey(0), lm_head=True)
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(1), params["head"]["kernel"].shape)
    seq, mask = left_padded(ROWS, 8)
    # Right-pad one row too: the score is read at the last *real* token, wherever it is.
    mask = mask.at[2, -1].set(0)
    scalars, logits = ScalarModel(cfg, lm_head=True).apply({"params": params}, seq, positions_from_mask(mask), mask,
                                                            return_logits=True)
    scalars, logits = np.asarray(scalars), np.asarray(logits, np.float64)
    last = [7, 7, 6]
    no_lm = {k: v for k, v in params.items()}
    no_lm["backbone"] = {k: v for k, v in params["backbone"].items() if k != "lm_head"}
    np.testing.assert_allclose(np.asarray(api.scores(no_lm, cfg, seq, mask)), scalars[np.arange(3), last], atol=1e-5)
    v = np.asarray(api.values(no_lm, cfg, seq, mask, start=5))
    np.testing.assert_allclose(v, np.where(np.asarray(mask)[:, 5:] == 1, scalars[:, 4:7], 0.0), atol=1e-5)
    response = jnp.zeros_like(mask).at[:, 5:].set(1)
    score, total, count = api.scores_and_response_logp(params, cfg, seq, mask, response)
    lp = np.take_along_axis(np_log_softmax(logits[:, :-1]), np.asarray(seq)[:, 1:, None], -1)[..., 0]
    m = (np.asarray(response) * np.asarray(mask))[:, 1:]
    np.testing.assert_allclose(np.asarray(score), scalars[np.arange(3), last], atol=1e-5)
    np.testing.assert_allclose(np.asarray(total), (lp * m).sum(-1), atol=5e-5)
    np.testing.assert_array_equal(np.asarray(count), m.sum(-1))


def test_activations_final_norm_is_the_hidden_state():
    cfg = tiny_cfg("llama", vocab_size=VOCAB)
    params = sharp_params(cfg)
    seq, mask = left_padded(ROWS, 8)
    acts = api.activations(params, cfg, seq, mask, (0, api.FINAL_NORM))
    hidden = api.forward(params, cfg, seq, mask).hidden
    np.testing.assert_allclose(np.asarray(acts[api.FINAL_NORM]), np.asarray(hidden), atol=1e-6)
    assert acts[0].shape == hidden.shape and not np.allclose(np.asarray(acts[0]), np.asarray(hidden))


def test_lm_head_on_chosen_slots_equals_the_full_logits_there():
    """head_slots (teacher-forced phases: the response's slots) and last_logits_only (the sampler's prefill)
    give the full forward's logits at those slots, tied (GPT-2) and untied (Llama) heads alike."""
    from rlhfjax.models import init_cache, init_params

    for family in ("gpt2", "llama"):
        cfg = tiny_cfg(family)
        params = init_params(cfg, jax.random.PRNGKey(3))
        seq, mask = left_padded(ROWS, 8)
        full = np.asarray(api.forward(params, cfg, seq, mask).logits)
        some = api.forward(params, cfg, seq, mask, head_slots=(3, 7))
        assert some.logits.shape == (3, 4, cfg.vocab_size)
        np.testing.assert_allclose(np.asarray(some.logits), full[:, 3:7], atol=1e-5)
        np.testing.assert_allclose(np.asarray(some.hidden), np.asarray(api.forward(params, cfg, seq, mask).hidden),
                                   atol=1e-6)  # the hidden states stay whole (value heads read them)
        cache = init_cache(cfg, 3, 12)
        cache_mask = jnp.concatenate([mask, jnp.zeros((3, 4), mask.dtype)], axis=1)
        last = api.decode(params, cfg, seq, positions_from_mask(mask), cache_mask, cache, 0, last_logits_only=True)
        assert last.logits.shape == (3, 1, cfg.vocab_size)
        np.testing.assert_allclose(np.asarray(last.logits[:, 0]), full[:, -1], atol=1e-5)
