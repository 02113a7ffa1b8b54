"""Model-layer properties that need no reference implementation: dtypes, logical axes, caches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.models import Transformer, init_cache, init_params, positions_from_mask, preset

FAMILIES = ["gpt2", "gpt_neox", "llama", "qwen2"]


def _cfg(family, **kw):
    extra = {"num_kv_heads": 2} if family in ("llama", "qwen2") else {}
    return preset(family, vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                  max_position_embeddings=32, **extra, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_param_has_logical_axes(family):
    cfg = _cfg(family)
    t = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0), t, t, t + 1))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == len(leaf.value.shape)
        assert any(n is not None for n in leaf.names)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_compute_tracks_fp32(family):
    cfg = _cfg(family)
    params = init_params(cfg, jax.random.PRNGKey(1))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 64)
    mask = jnp.ones_like(tokens)
    ref = Transformer(cfg).apply({"params": params}, tokens, positions_from_mask(mask), mask)
    out = Transformer(cfg.replace(dtype="bfloat16")).apply({"params": params}, tokens,
                                                           positions_from_mask(mask), mask)
    assert out.hidden.dtype == jnp.bfloat16 and out.logits.dtype == jnp.float32
    assert jax.tree.leaves(params)[0].dtype == jnp.float32  # params stay fp32 (param_dtype)
    err = np.abs(np.asarray(out.logits) - np.asarray(ref.logits)).max()
    assert err < 0.05 * np.abs(np.asarray(ref.logits)).max() + 1e-3


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_cached_prefill_plus_decode_equals_full_forward(family):
    cfg = _cfg(family)
    params = init_params(cfg, jax.random.PRNGKey(3))
    model = Transformer(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 9), 1, 64)
    mask = jnp.ones_like(tokens).at[1, :3].set(0)  # row 1 left-padded
    positions = positions_from_mask(mask)
    full = model.apply({"params": params}, tokens, positions, mask).logits
    L = 12
    cache_mask = jnp.zeros((2, L), jnp.int32).at[:, :6].set(mask[:, :6])
    out = model.apply({"params": params}, tokens[:, :6], positions[:, :6], cache_mask,
                      cache=init_cache(cfg, 2, L), cache_index=0)
    logits = [out.logits]
    cache = out.cache
    for t in range(6, 9):
        cache_mask = cache_mask.at[:, t].set(1)
        out = model.apply({"params": params}, tokens[:, t:t + 1], positions[:, t:t + 1], cache_mask,
                          cache=cache, cache_index=t)
        cache = out.cache
        logits.append(out.logits)
    stepped = jnp.concatenate(logits, axis=1)
    valid = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(stepped)[valid], np.asarray(full)[valid], atol=1e-5)


def test_block_outputs_are_readable_as_intermediates():
    cfg = _cfg("llama")
    params = init_params(cfg, jax.random.PRNGKey(5))
    tokens = jax.random.randint(jax.random.PRNGKey(6), (2, 7), 0, 64)
    mask = jnp.ones_like(tokens)
    out, state = Transformer(cfg).apply({"params": params}, tokens, positions_from_mask(mask), mask,
                                        mutable=["intermediates"])
    inter = state["intermediates"]
    assert sorted(inter) == ["hidden_0", "hidden_1"]
    # The final norm of the last block's output is the returned hidden state.
    from rlhfjax.models.transformer import Norm

    normed = Norm(cfg).apply({"params": params["final_norm"]}, inter["hidden_1"][0])
    np.testing.assert_allclose(np.asarray(normed), np.asarray(out.hidden), atol=1e-6)
