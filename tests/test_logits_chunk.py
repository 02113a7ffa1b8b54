"""`ModelConfig.logits_chunk`: the teacher-forced LM head, log-softmax, entropy and vocabulary KL over a few
response positions at a time give the same values and gradients as all positions at once, and the
backward never holds a batch × response × vocab array."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_runtime import left_padded, sharp_params, tiny_cfg

from rlhfjax.models import api, init_params, init_scalar_params
from rlhfjax.objectives import context_distill, ppo, superhf

ROWS = [[5, 9, 11, 3, 7, 8, 20, 21, 22, 23, 24], [4, 6, 30, 31, 32, 33, 34], [12, 13, 14, 15, 40, 41, 42, 43, 44]]
L, N = 12, 7  # the last N slots are the response; 7 is no multiple of the chunk 3


def _tree_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # tied and untied LM heads
def test_chunked_policy_outputs_equal_the_whole_response_at_once(family):
    cfg = tiny_cfg(family)
    params = sharp_params(cfg, scale=2.0)
    head = {"kernel": jax.random.normal(jax.random.PRNGKey(3), (cfg.hidden_size, 1)), "bias": jnp.zeros((1,))}
    seq, mask = left_padded(ROWS, L)
    whole = api.policy_outputs(params, cfg, seq, mask, start=L - N, temperature=0.7, value_head=head)
    chunked = api.policy_outputs(params, cfg.replace(logits_chunk=3), seq, mask, start=L - N, temperature=0.7,
                                 value_head=head)
    assert "logits_BxNxV" in whole and "logits_BxNxV" not in chunked
    for key in ("logp_BxN", "entropy_BxN", "values_BxN", "hidden_BxNxE"):
        assert chunked[key].shape == whole[key].shape
        np.testing.assert_allclose(np.asarray(chunked[key]), np.asarray(whole[key]), atol=2e-5, rtol=1e-5)
    # the entropy is that of the T-scaled logits, checked against numpy on the whole path's logits
    lg = np.asarray(whole["logits_BxNxV"], np.float64)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(chunked["entropy_BxN"]), -(p * np.log(p)).sum(-1), atol=2e-5)


def _ppo_batch(seq, mask, seed=0):
    r = np.random.default_rng(seed)
    rmask = mask[:, L - N:]
    return {"sequence_BxL": seq, "sequence_mask_BxL": mask, "response_mask_BxN": rmask,
            "old_logp_BxN": jnp.asarray(r.normal(size=(3, N)) * 0.1 - 2.0, jnp.float32),
            "old_values_BxN": jnp.asarray(r.normal(size=(3, N)), jnp.float32),
            "advantages_BxN": jnp.asarray(r.normal(size=(3, N)), jnp.float32),
            "returns_BxN": jnp.asarray(r.normal(size=(3, N)), jnp.float32)}


def test_chunked_ppo_loss_has_the_same_value_and_gradient():
    cfg = tiny_cfg("gpt2")
    params = {"policy": sharp_params(cfg, scale=2.0),
              "value": {"kernel": jnp.full((cfg.hidden_size, 1), 0.1), "bias": jnp.zeros((1,))}}
    seq, mask = left_padded(ROWS, L)
    batch = _ppo_batch(seq, mask)

    def loss(chunk):
        config = ppo.PPOLossConfig(policy_model=cfg.replace(logits_chunk=chunk), value_model=None, num_response=N,
                                   entropy_coef=0.05, first_ratio="remat", remat=True)
        return jax.value_and_grad(lambda p: ppo.loss_fn(p, batch, frozen=None, config=config, rng=None)[0])(params)

    (whole, g_whole), (chunked, g_chunked) = loss(0), loss(2)
    np.testing.assert_allclose(float(chunked), float(whole), rtol=1e-5)
    _tree_close(g_chunked, g_whole, atol=1e-5)
    assert float(jnp.abs(g_whole["policy"]["embed"]["embedding"]).sum()) > 0  # the head's gradient is there


@pytest.mark.parametrize("kind", superhf.KL_PRIORS)
def test_chunked_superhf_and_distillation_kl_equal_the_whole_vocabulary_at_once(kind):
    cfg = tiny_cfg("llama")
    policy, ref = sharp_params(cfg, seed=0, scale=2.0), sharp_params(cfg, seed=1, scale=2.0)
    seq, mask = left_padded(ROWS, L)
    batch = {"sequence_BxL": seq, "sequence_mask_BxL": mask, "response_mask_BxN": mask[:, L - N:]}
    distill_batch = {**batch, "teacher_sequence_BxL": seq, "teacher_sequence_mask_BxL": mask}

    def losses(chunk):
        model = cfg.replace(logits_chunk=chunk)
        s_cfg = superhf.SuperHFLossConfig(model=model, num_response=N, kl_coef=0.5, kl_prior=kind)
        d_cfg = context_distill.DistillLossConfig(model=model, num_response=N, temperature=0.8)
        s = jax.value_and_grad(lambda p: superhf.loss_fn({"policy": p}, batch, frozen=ref, config=s_cfg,
                                                         rng=None)[0])(policy)
        d = jax.value_and_grad(lambda p: context_distill.loss_fn({"policy": p}, distill_batch, frozen=ref,
                                                                 config=d_cfg, rng=None)[0])(policy)
        return s, d

    for (whole, g_whole), (chunked, g_chunked) in zip(losses(0), losses(3)):
        assert float(whole) > 1e-3  # two different models: the KL is not trivially 0
        np.testing.assert_allclose(float(chunked), float(whole), rtol=1e-5)
        _tree_close(g_chunked, g_whole, atol=1e-5)


def _vocab_arrays(hlo: str, V: int, E: int) -> set[tuple[int, ...]]:
    """Shapes of the f32 arrays in `hlo` that end in the vocabulary, the tied embedding's (gradient) aside."""
    shapes = {tuple(int(d) for d in m.split(",")) for m in re.findall(r"f32\[([\d,]+)\]", hlo)}
    return {s for s in shapes if s and s[-1] == V and s != (E, V)}


def test_the_chunked_backward_holds_no_batch_by_response_by_vocab_array():
    V, B = 257, 3  # a vocabulary size no other axis has
    cfg = tiny_cfg("gpt2", vocab_size=V)
    params = {"policy": init_params(cfg, jax.random.PRNGKey(0)),
              "value": {"kernel": jnp.zeros((cfg.hidden_size, 1)), "bias": jnp.zeros((1,))}}
    seq, mask = left_padded(ROWS, L)
    batch = _ppo_batch(seq, mask)

    def compiled_shapes(chunk):
        config = ppo.PPOLossConfig(policy_model=cfg.replace(logits_chunk=chunk), value_model=None, num_response=N,
                                   entropy_coef=0.01)
        grad = jax.jit(jax.grad(lambda p: ppo.loss_fn(p, batch, frozen=None, config=config, rng=None)[0]))
        return _vocab_arrays(grad.lower(params).compile().as_text(), V, cfg.hidden_size)

    def most_rows(shapes):  # positions × batch rows of logits held at once, however XLA shapes them
        return max(int(np.prod(s[:-1])) for s in shapes)

    assert most_rows(compiled_shapes(0)) == B * N  # the whole path does hold them: the check can fail
    assert most_rows(compiled_shapes(2)) == B * 2


def test_chunked_scores_and_response_logp_of_a_scalar_model_with_its_lm_head():
    """The RM's auxiliary LM loss (`rm.lm_coef`) reads log-probs off the scalar model's kept LM head."""
    cfg = tiny_cfg("gpt2")
    params = init_scalar_params(cfg, jax.random.PRNGKey(0), lm_head=True)
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(1), params["head"]["kernel"].shape)
    seq, mask = left_padded(ROWS, L)
    response = mask.at[:, :L - N].set(0)

    def run(chunk):
        c = cfg.replace(logits_chunk=chunk)
        out = api.scores_and_response_logp(params, c, seq, mask, response)
        grad = jax.grad(lambda p: sum(jnp.sum(x) for x in api.scores_and_response_logp(p, c, seq, mask, response)))
        return out, grad(params)

    (whole, g_whole), (chunked, g_chunked) = run(0), run(4)
    _tree_close(chunked, whole, atol=2e-5)
    _tree_close(g_chunked, g_whole, atol=1e-5)
    assert float(jnp.abs(whole[1]).sum()) > 0
