"""Next-token negative log-likelihood, the building block of LM pre-training and SFT.

Token losses are returned as (sum, count) so a mean is exact under padding, packing and gradient
accumulation (DESIGN convention 10); `loss_fn` divides once, at the end.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.models import ModelConfig, Transformer


def token_logp(logits_BxTxV: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
    """log p(tokens[t+1] | tokens[:t+1]) for t < T-1, aligned to the *predicted* token: BxT, [:, 0] = 0."""
    logp = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(picked, ((0, 0), (1, 0)))


def masked_nll(logits_BxTxV, tokens_BxT, loss_mask_BxT) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p over tokens where loss_mask is 1, number of such tokens).

    `loss_mask[b, t]` = 1 means token t is predicted (from tokens < t); position 0 is never predicted.
    """
    mask = jnp.asarray(loss_mask_BxT, jnp.float32).at[:, 0].set(0.0)
    nll = -token_logp(logits_BxTxV, tokens_BxT) * mask
    return nll.sum(), mask.sum()


@dataclasses.dataclass(frozen=True)
class LMLossConfig:
    model: ModelConfig


def loss_fn(params, batch, *, frozen, config: LMLossConfig, rng):
    """Mean NLL on `batch = {tokens_BxT, mask_BxT, loss_mask_BxT}` (right-padded rows)."""
    del frozen, rng
    positions = jnp.maximum(jnp.cumsum(batch["mask_BxT"], axis=-1) - 1, 0)
    out = Transformer(config.model).apply({"params": params}, batch["tokens_BxT"], positions,
                                          batch["mask_BxT"])
    total, count = masked_nll(out.logits, batch["tokens_BxT"], batch["loss_mask_BxT"])
    loss = total / jnp.maximum(count, 1.0)
    return loss, {"lm/nll_sum": total, "lm/tokens": count, "lm/nll": loss}
