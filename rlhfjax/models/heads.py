"""Scalar-head models (value and reward/preference models) on the shared decoder backbone.

Params: `{"backbone": <Transformer params without lm_head>, "head": {"kernel", "bias"}}`, so a
policy checkpoint initialises a reward or value model with `scalar_params_from_lm`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhfjax.models.config import ModelConfig
from rlhfjax.models.transformer import Transformer


class ScalarModel(nn.Module):
    """Backbone + linear head giving one scalar per token (`scalars_BxT`, fp32)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT, mask_BxT):
        out = Transformer(self.cfg, lm_head=False, name="backbone")(tokens_BxT, positions_BxT, mask_BxT)
        head = nn.Dense(
            1, dtype=jnp.float32, param_dtype=self.cfg.weights_dtype,
            # Zero init: a fresh head scores everything 0, so early rewards/values are unbiased.
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
            name="head")
        return head(out.hidden.astype(jnp.float32))[..., 0]


def read_at(values_BxT: jax.Array, index_B: jax.Array) -> jax.Array:
    """values[b, index[b]]: e.g. a reward read at each row's last response token."""
    return jnp.take_along_axis(values_BxT, index_B[:, None].astype(jnp.int32), axis=1)[:, 0]


def last_token_index(mask_BxT: jax.Array) -> jax.Array:
    """Index of each row's last valid token (right- or left-padded rows alike)."""
    T = mask_BxT.shape[1]
    slots = jnp.where(mask_BxT.astype(bool), jnp.arange(T)[None, :], -1)
    return jnp.maximum(slots.max(axis=1), 0)


def scalar_params_from_lm(lm_params, head_params):
    """Reuse a policy's backbone for a scalar model (its LM head is dropped)."""
    backbone = {k: v for k, v in lm_params.items() if k != "lm_head"}
    return {"backbone": backbone, "head": head_params}


def init_scalar_params(cfg: ModelConfig, rng: jax.Array):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return nn.meta.unbox(ScalarModel(cfg).init(rng, tokens, tokens, jnp.ones_like(tokens))["params"])
