"""Supervised fine-tuning: NLL of the response tokens given the prompt (prompt tokens masked)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlhfjax.models import ModelConfig, Transformer, positions_from_mask
from rlhfjax.objectives.lm import masked_nll


@dataclasses.dataclass(frozen=True)
class SFTLossConfig:
    model: ModelConfig


def response_nll(params, batch, model_cfg: ModelConfig):
    """(sum, count) of response-token NLL over real rows of a `collate_sft` batch."""
    mask = batch["mask_BxT"]
    out = Transformer(model_cfg).apply({"params": params}, batch["tokens_BxT"], positions_from_mask(mask), mask)
    loss_mask = batch["response_mask_BxT"] * batch["row_mask_B"][:, None]
    return masked_nll(out.logits, batch["tokens_BxT"], loss_mask)


def loss_fn(params, batch, *, frozen, config: SFTLossConfig, rng):
    del frozen, rng
    total, count = response_nll(params, batch, config.model)
    loss = total / jnp.maximum(count, 1.0)
    return loss, {"sft/nll_sum": total, "sft/tokens": count, "sft/nll": loss}
