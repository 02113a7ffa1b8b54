"""Tiny models and data shared by the runtime tests (sampler, sharding, update, checkpoints)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax.models import init_params, positions_from_mask, preset, Transformer

VOCAB = 64


def np_log_softmax(x):
    """log softmax over the last axis in numpy: the reference the log-prob tests compare against."""
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def tiny_cfg(family="llama", **kw):
    sizes = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                 max_position_embeddings=128)
    if family in ("llama", "qwen2"):
        sizes["num_kv_heads"] = 2
    return preset(family, **{**sizes, **kw})


def sharp_params(cfg, seed=0, scale=8.0):
    """Random params scaled up so next-token distributions are peaked (no argmax near-ties)."""
    p = init_params(cfg, jax.random.PRNGKey(seed))
    return jax.tree.map(lambda x: x * scale if x.ndim >= 2 else x, p)


def left_padded(rows, length, pad_id=0):
    """Left-pad lists of token ids to `length`: (tokens_BxP, mask_BxP) as int32 arrays."""
    toks = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        toks[i, length - len(r):] = r
        mask[i, length - len(r):] = 1
    return jnp.asarray(toks), jnp.asarray(mask)


def lm_logits(params, cfg, tokens_BxT, mask_BxT):
    return Transformer(cfg).apply({"params": params}, tokens_BxT, positions_from_mask(mask_BxT),
                                  mask_BxT).logits


def nll_loss(params, batch, *, frozen, config, rng):
    """Token-level NLL (masked sum / count) with rng-dependent token dropout, so keys matter."""
    cfg = config.model if hasattr(config, "model") else config
    tokens, mask = batch["tokens"], batch["mask"]
    if rng is not None:
        mask = mask * (jax.random.uniform(rng, mask.shape) > 0.1)
    logits = lm_logits(params, cfg, tokens, batch["mask"])
    lp = jax.nn.log_softmax(logits[:, :-1], -1)
    lp = jnp.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0]
    m = mask[:, 1:].astype(jnp.float32)
    total = -(lp * m).sum()
    return total, m.sum(), {"nll/token_mean": total / jnp.maximum(m.sum(), 1.0)}


def damage_checkpoint(step_dir, how: str) -> None:
    """Damage an orbax checkpoint step as a cut-short write or a careless cleanup would: "truncate" every file to
    half its bytes, or "delete" its array files (the OCDBT manifests and data)."""
    for root, _, files in os.walk(step_dir):
        for f in files:
            path = os.path.join(root, f)
            if how == "truncate":
                os.truncate(path, os.path.getsize(path) // 2)
            elif "ocdbt" in root or "manifest" in f:
                os.remove(path)
