"""Scalar-head models (value and reward/preference models) on the shared decoder backbone.

Params: `{"backbone": <Transformer params without lm_head>, "head": {"kernel", "bias"}}`, so a
policy checkpoint initialises a reward or value model with `scalar_params_from_lm`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhfjax.models.config import ModelConfig
from rlhfjax.models.transformer import Transformer, on_rows


class ValueHead(nn.Module):
    """The linear scalar head on final hidden states (fp32; zero init: a fresh head scores everything
    0, so early rewards/values are unbiased). `ScalarModel`'s `head` and a policy's value head."""

    weights_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_BxTxE):
        E = hidden_BxTxE.shape[-1]
        kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, ("embed", None)), (E, 1),
                            self.weights_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (None,)), (1,),
                          self.weights_dtype)
        out = on_rows(lambda h: h @ kernel.astype(jnp.float32), hidden_BxTxE.astype(jnp.float32))
        out = out + bias.astype(jnp.float32)
        return out[..., 0]


def init_value_head(cfg: ModelConfig):
    """Params of a zero `ValueHead` for a `cfg` backbone (e.g. a value head on the policy)."""
    variables = ValueHead(cfg.weights_dtype).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, cfg.hidden_size)))
    return nn.meta.unbox(variables["params"])


class ScalarModel(nn.Module):
    """Backbone + linear head giving one scalar per token (`scalars_BxT`, fp32).

    `lm_head=True` keeps the backbone's LM head (e.g. for an auxiliary LM loss on a preference
    model, or a policy with a value head); call with `return_logits=True` to get
    `(scalars_BxT, logits_BxTxV)`.
    """

    cfg: ModelConfig
    lm_head: bool = False

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT, mask_BxT, return_logits: bool = False):
        out = Transformer(self.cfg, lm_head=self.lm_head, name="backbone")(tokens_BxT, positions_BxT, mask_BxT)
        scalars = ValueHead(self.cfg.weights_dtype, name="head")(out.hidden)
        if return_logits:
            if out.logits is None:
                raise ValueError("return_logits=True needs ScalarModel(..., lm_head=True)")
            return scalars, out.logits
        return scalars


def read_at(values_BxT: jax.Array, index_B: jax.Array) -> jax.Array:
    """values[b, index[b]]: e.g. a reward read at each row's last response token."""
    return jnp.take_along_axis(values_BxT, index_B[:, None].astype(jnp.int32), axis=1)[:, 0]


def last_token_index(mask_BxT: jax.Array) -> jax.Array:
    """Index of each row's last valid token (right- or left-padded rows alike)."""
    T = mask_BxT.shape[1]
    slots = jnp.where(mask_BxT.astype(bool), jnp.arange(T)[None, :], -1)
    return jnp.maximum(slots.max(axis=1), 0)


def scalar_params_from_lm(lm_params, head_params, keep_lm_head: bool = False):
    """Reuse a policy's backbone for a scalar model (its LM head dropped unless `keep_lm_head`)."""
    backbone = {k: v for k, v in lm_params.items() if keep_lm_head or k != "lm_head"}
    return {"backbone": backbone, "head": head_params}


def without_lm_head(scalar_params):
    """A `ScalarModel(lm_head=True)`'s params as a plain scalar model's: the LM head (an auxiliary loss's)
    dropped; the score reads the same hidden states, so it is unchanged."""
    backbone = {k: v for k, v in scalar_params["backbone"].items() if k != "lm_head"}
    return {**scalar_params, "backbone": backbone}


def init_scalar_params(cfg: ModelConfig, rng: jax.Array, lm_head: bool = False):
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = ScalarModel(cfg, lm_head=lm_head).init(rng, tokens, tokens, jnp.ones_like(tokens))
    return nn.meta.unbox(variables["params"])
