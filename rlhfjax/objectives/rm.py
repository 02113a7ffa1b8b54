"""Reward (preference) model training objective: `loss_fn` over `collate_pairs` / `collate_ranked` batches.

One name, "rm", for the preference/reward model: this module, the `rm` config section, the
`rlhfjax rm` command and the "rm/..." metrics. The per-comparison losses live in `objectives/pairwise.py`.

`config.objective` picks the Askell et al. (2021) variant:
- "ranked": Bradley–Terry on pairs, Plackett–Luce on ranked lists (ScalarModel params);
- "binary": each response classified good/bad on its own (ScalarModel params);
- "imitation": LM loss on the preferred response; responses are scored by mean token
  log-likelihood (Transformer LM params).
`config.lm_coef > 0` adds the LM loss on the chosen response to "ranked"/"binary" (the PM then
keeps an LM head: `ScalarModel(cfg, lm_head=True)`).

Every per-row quantity is weighted by `row_mask_B`, so the padding rows of a last partial batch
contribute nothing; means are (sum, count) pairs divided once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.models import (ModelConfig, ScalarModel, Transformer, last_token_index, positions_from_mask,
                            read_at)
from rlhfjax.objectives import pairwise as P
from rlhfjax.objectives.lm import masked_nll, token_logp

OBJECTIVES = ("ranked", "binary", "imitation")


@dataclasses.dataclass(frozen=True)
class RMLossConfig:
    model: ModelConfig
    objective: str = "ranked"
    lm_coef: float = 0.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")

    @property
    def uses_lm_head(self) -> bool:
        return self.objective == "imitation" or self.lm_coef > 0


def _stack_pairs(batch):
    """Chosen and rejected rows as one 2B batch (one forward pass)."""
    cat = lambda k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])  # noqa: E731
    return cat("tokens_BxT"), cat("mask_BxT"), cat("response_mask_BxT")


def _scalar_scores(params, tokens, mask, config: RMLossConfig):
    model = ScalarModel(config.model, lm_head=config.lm_coef > 0)
    pos = positions_from_mask(mask)
    if config.lm_coef > 0:
        scalars, logits = model.apply({"params": params}, tokens, pos, mask, return_logits=True)
    else:
        scalars, logits = model.apply({"params": params}, tokens, pos, mask), None
    return read_at(scalars, last_token_index(mask)), logits


def _loglik_scores(params, tokens, mask, response_mask, model_cfg: ModelConfig):
    """Mean log-likelihood of each row's response tokens, and the logits."""
    logits = Transformer(model_cfg).apply({"params": params}, tokens, positions_from_mask(mask), mask).logits
    lp = token_logp(logits, tokens) * response_mask
    return lp.sum(1) / jnp.maximum(response_mask.sum(1), 1), logits


def pair_scores(params, batch, config: RMLossConfig):
    """(r_chosen_B, r_rejected_B, logits of the 2B rows or None) for a pairs batch."""
    tokens, mask, response_mask = _stack_pairs(batch)
    if config.objective == "imitation":
        scores, logits = _loglik_scores(params, tokens, mask, response_mask, config.model)
    else:
        scores, logits = _scalar_scores(params, tokens, mask, config)
    B = batch["chosen_tokens_BxT"].shape[0]
    return scores[:B], scores[B:], logits


def loss_fn(params, batch, *, frozen, config: RMLossConfig, rng):
    del frozen, rng
    if "tokens_BxKxT" in batch:
        return _ranked_list_loss(params, batch, config)
    rows = batch["row_mask_B"].astype(jnp.float32)
    n_rows = jnp.maximum(rows.sum(), 1.0)
    r_c, r_r, logits = pair_scores(params, batch, config)
    B = r_c.shape[0]
    metrics = {"rm/accuracy": jnp.sum(P.pair_accuracy(r_c, r_r) * rows) / n_rows,
               "rm/margin": jnp.sum((r_c - r_r) * rows) / n_rows, "rm/rows": rows.sum()}
    chosen_lm = jnp.zeros(())
    if logits is not None:
        total, count = masked_nll(logits[:B], batch["chosen_tokens_BxT"],
                                  batch["chosen_response_mask_BxT"] * rows[:, None])
        chosen_lm = total / jnp.maximum(count, 1.0)
        metrics["rm/chosen_nll"] = chosen_lm
    if config.objective == "imitation":
        loss = chosen_lm
    else:
        per_row = P.bradley_terry(r_c, r_r) if config.objective == "ranked" else P.binary_discrimination(r_c, r_r)
        pref = jnp.sum(per_row * rows) / n_rows
        metrics["rm/preference_loss"] = pref
        loss = pref + config.lm_coef * chosen_lm
    return loss, metrics


def _ranked_list_loss(params, batch, config: RMLossConfig):
    if config.objective != "ranked" or config.lm_coef > 0:
        raise ValueError("ranked lists train the 'ranked' objective without an LM term; use pairs otherwise")
    B, K, T = batch["tokens_BxKxT"].shape
    flat = lambda k: batch[k].reshape(B * K, T)  # noqa: E731
    scores, _ = _scalar_scores(params, flat("tokens_BxKxT"), flat("mask_BxKxT"), config)
    scores = scores.reshape(B, K)
    rows = batch["row_mask_B"].astype(jnp.float32)
    n_rows = jnp.maximum(rows.sum(), 1.0)
    loss = jnp.sum(P.plackett_luce(scores, batch["rank_mask_BxK"]) * rows) / n_rows
    top_first = jnp.where(batch["rank_mask_BxK"].astype(bool), scores, -jnp.inf).argmax(1) == 0
    return loss, {"rm/preference_loss": loss, "rm/top1_accuracy": jnp.sum(top_first * rows) / n_rows,
                  "rm/rows": rows.sum()}


def init_rm_params(config: RMLossConfig, rng: jax.Array, lm_params=None):
    """Fresh PM params for the objective, optionally starting from a pretrained LM's params."""
    from rlhfjax.models import init_params, init_scalar_params
    from rlhfjax.models.heads import scalar_params_from_lm

    if config.objective == "imitation":
        return lm_params if lm_params is not None else init_params(config.model, rng)
    fresh = init_scalar_params(config.model, rng, lm_head=config.lm_coef > 0)
    if lm_params is None:
        return fresh
    return scalar_params_from_lm(lm_params, fresh["head"], keep_lm_head=config.lm_coef > 0)
