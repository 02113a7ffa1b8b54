"""Next-token negative log-likelihood, the building block of LM pre-training and SFT.

Token losses are returned as (sum, count) so a mean is exact under padding, packing and gradient
accumulation (DESIGN convention 10): `train.update` divides once, over the whole batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.models import ModelConfig, api


def masked_nll(params, cfg: ModelConfig, tokens_BxT, mask_BxT, loss_mask_BxT) -> tuple[jax.Array, jax.Array]:
    """(sum of −log p over tokens where `loss_mask` is 1, number of such tokens).

    `loss_mask[b, t]` = 1 means token t is predicted (from tokens < t); position 0 never is.
    """
    total, count = api.response_logp(params, cfg, tokens_BxT, mask_BxT, loss_mask_BxT)
    return -jnp.sum(total), jnp.sum(count)


@dataclasses.dataclass(frozen=True)
class LMLossConfig:
    model: ModelConfig


def loss_fn(params, batch, *, frozen, config: LMLossConfig, rng):
    """NLL over `batch = {tokens_BxT, mask_BxT, loss_mask_BxT}` (right-padded rows) → (sum, count, metrics)."""
    del frozen, rng
    total, count = masked_nll(params, config.model, batch["tokens_BxT"], batch["mask_BxT"], batch["loss_mask_BxT"])
    return total, count, {"lm/nll": total / jnp.maximum(count, 1.0)}
