"""Supervised fine-tuning: NLL of the response tokens given the prompt (prompt tokens masked)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlhfjax.models import ModelConfig
from rlhfjax.objectives.lm import masked_nll


@dataclasses.dataclass(frozen=True)
class SFTLossConfig:
    model: ModelConfig


def response_nll(params, batch, model_cfg: ModelConfig):
    """(sum, count) of response-token NLL over real rows of a `collate_sft` batch."""
    loss_mask = batch["response_mask_BxT"] * batch["row_mask_B"][:, None]
    return masked_nll(params, model_cfg, batch["tokens_BxT"], batch["mask_BxT"], loss_mask)


def loss_fn(params, batch, *, frozen, config: SFTLossConfig, rng):
    del frozen, rng
    total, count = response_nll(params, batch, config.model)
    return total, count, {"sft/nll": total / jnp.maximum(count, 1.0)}
