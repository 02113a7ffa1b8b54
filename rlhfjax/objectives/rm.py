"""Reward (preference) model training objective: `loss_fn` over `collate_pairs` / `collate_ranked` batches.

One name, "rm", for the preference/reward model: this module, the `rm` config section, the
`rlhfjax rm` command and the "rm/..." metrics. The per-comparison losses live in `objectives/pairwise.py`.

`config.objective` picks the Askell et al. (2021) variant:
- "ranked": Bradley–Terry on pairs, Plackett–Luce on ranked lists (ScalarModel params);
- "binary": each response classified good/bad on its own (ScalarModel params);
- "imitation": LM loss on the preferred response; responses are scored by mean token
  log-likelihood (Transformer LM params).
`config.lm_coef > 0` adds the LM loss on the chosen response to "ranked"/"binary" (the PM then
keeps an LM head: `ScalarModel(cfg, lm_head=True)`, model kind "scalar_lm").

`loss_fn` returns `(total, count, metrics)` (the `train.update` contract; the loss is total / count):
- ranked / binary: count = real rows (`row_mask_B`), total = Σ per-row preference loss
  (+ lm_coef · chosen-response token-mean NLL · rows). The LM term is a token mean *per batch*
  (per micro-batch under gradient accumulation), weighted by that batch's rows;
- imitation: total = NLL summed over the chosen responses' tokens, count = those tokens.
Padding rows of a last partial batch contribute nothing (their row mask is 0).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.choices import RM_OBJECTIVES as OBJECTIVES
from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives import pairwise as P



@dataclasses.dataclass(frozen=True)
class RMLossConfig:
    model: ModelConfig
    objective: str = "ranked"
    lm_coef: float = 0.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")

    @property
    def uses_lm_head(self) -> bool:
        return self.objective == "imitation" or self.lm_coef > 0

    @property
    def model_kind(self) -> str:
        """The `models.api` kind of the trained params (for shardings and sharded init)."""
        if self.objective == "imitation":
            return "lm"
        return "scalar_lm" if self.lm_coef > 0 else "scalar"


def _stack_pairs(batch):
    """Chosen and rejected rows as one 2B batch (one forward pass)."""
    cat = lambda k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])  # noqa: E731
    return cat("tokens_BxT"), cat("mask_BxT"), cat("response_mask_BxT")


def _pair_forward(params, batch, config: RMLossConfig):
    """(r_chosen_B, r_rejected_B, chosen response (logp sum_B, count_B) or None) in one 2B forward."""
    tokens, mask, response_mask = _stack_pairs(batch)
    B = batch["chosen_tokens_BxT"].shape[0]
    lm = None
    if config.objective == "imitation":
        s, c = api.response_logp(params, config.model, tokens, mask, response_mask)
        scores = s / jnp.maximum(c, 1.0)  # mean token log-likelihood: longer responses are not penalised
        lm = (s[:B], c[:B])
    elif config.lm_coef > 0:
        scores, s, c = api.scores_and_response_logp(params, config.model, tokens, mask, response_mask)
        lm = (s[:B], c[:B])
    else:
        scores = api.scores(params, config.model, tokens, mask)
    return scores[:B], scores[B:], lm


def pair_scores(params, batch, config: RMLossConfig):
    """(r_chosen_B, r_rejected_B) for a pairs batch (imitation: mean response log-likelihood)."""
    r_c, r_r, _ = _pair_forward(params, batch, config)
    return r_c, r_r


def loss_fn(params, batch, *, frozen, config: RMLossConfig, rng):
    del frozen, rng
    if "tokens_BxKxT" in batch:
        return _ranked_list_loss(params, batch, config)
    rows = batch["row_mask_B"].astype(jnp.float32)
    n_rows = rows.sum()
    mean = lambda x: jnp.sum(x * rows) / jnp.maximum(n_rows, 1.0)  # noqa: E731
    r_c, r_r, lm = _pair_forward(params, batch, config)
    metrics = {"rm/accuracy": mean(P.pair_accuracy(r_c, r_r)), "rm/margin": mean(r_c - r_r)}
    if lm is not None:
        nll_total, tokens = -jnp.sum(lm[0] * rows), jnp.sum(lm[1] * rows)
        metrics["rm/chosen_nll"] = nll_total / jnp.maximum(tokens, 1.0)
    if config.objective == "imitation":
        return nll_total, tokens, metrics
    per_row = P.bradley_terry(r_c, r_r) if config.objective == "ranked" else P.binary_discrimination(r_c, r_r)
    metrics["rm/preference_loss"] = mean(per_row)
    total = jnp.sum(per_row * rows)
    if lm is not None:
        total = total + config.lm_coef * metrics["rm/chosen_nll"] * n_rows
    return total, n_rows, metrics


def _ranked_list_loss(params, batch, config: RMLossConfig):
    if config.objective != "ranked" or config.lm_coef > 0:
        raise ValueError("ranked lists train the 'ranked' objective without an LM term; use pairs otherwise")
    B, K, T = batch["tokens_BxKxT"].shape
    flat = lambda k: batch[k].reshape(B * K, T)  # noqa: E731
    scores = api.scores(params, config.model, flat("tokens_BxKxT"), flat("mask_BxKxT")).reshape(B, K)
    rows = batch["row_mask_B"].astype(jnp.float32)
    n_rows = rows.sum()
    total = jnp.sum(P.plackett_luce(scores, batch["rank_mask_BxK"]) * rows)
    top_first = jnp.where(batch["rank_mask_BxK"].astype(bool), scores, -jnp.inf).argmax(1) == 0
    denom = jnp.maximum(n_rows, 1.0)
    return total, n_rows, {"rm/preference_loss": total / denom, "rm/top1_accuracy": jnp.sum(top_first * rows) / denom}


def init_rm_params(config: RMLossConfig, rng: jax.Array, lm_params=None):
    """PM params for the objective: from a pretrained LM's params (its backbone, a fresh zero head;
    arrays are reused as they are, sharded or not), else a random init."""
    from rlhfjax.models import init_params, init_scalar_params, init_value_head
    from rlhfjax.models.heads import scalar_params_from_lm

    if config.objective == "imitation":
        return lm_params if lm_params is not None else init_params(config.model, rng)
    if lm_params is None:
        return init_scalar_params(config.model, rng, lm_head=config.lm_coef > 0)
    # `ScalarModel`'s head is a zero-initialised ValueHead: no backbone is initialised only to be dropped.
    return scalar_params_from_lm(lm_params, init_value_head(config.model), keep_lm_head=config.lm_coef > 0)
