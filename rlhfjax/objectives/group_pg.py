"""Group-baseline policy gradients: RLOO and GRPO. k completions per prompt; each completion's
baseline comes from the other completions to the same prompt, so there is no value model.

RLOO (Ahmadian et al. 2024, "Back to Basics"; Kool et al. 2019): the reward of completion i is
R_i = score_i − β · Σ_t (log π(y_t) − log π_ref(y_t)) (the KL penalty in the reward, sequence
level), and its advantage the leave-one-out difference A_i = R_i − 1/(k−1) Σ_{j≠i} R_j.

GRPO (Shao et al. 2024, DeepSeekMath §4.1): A_i = (r_i − mean_group r) / (std_group r + ε) of the
scores alone (`scale_by_std=False`: no division, as Dr. GRPO, Liu et al. 2025); the KL to the
reference goes into the loss instead, per token with the k3 estimator π_ref/π − log(π_ref/π) − 1.

Both train the clipped surrogate of PPO (`objectives.core.clipped_surrogate`) with the sequence's
advantage at each of its tokens; with one epoch of one minibatch the ratio is 1 and the gradient is
plain REINFORCE with the group baseline. ReMax and REINFORCE++ train this loss too, with their own
advantages (REINFORCE++'s per token). `aggregation` chooses how token losses become the loss,
each as (sum, count) so gradient accumulation stays exact (DESIGN convention 10):
  token_mean     Σ_tokens l / #tokens                      (DAPO; TRL's default)
  sequence_mean  Σ_i (Σ_t l_it / |y_i|) / #completions     (GRPO's 1/G Σ_i 1/|o_i| Σ_t)
  sequence_sum   Σ_i Σ_t l_it / #completions               (REINFORCE on log π(y), RLOO's estimator)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.choices import AGGREGATIONS, FIRST_RATIOS
from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives.core import clipped_surrogate, kl_per_token, masked_mean, rollout_logp


def _groups(x_R, group_size: int):
    if group_size < 2 or x_R.shape[0] % group_size:
        raise ConfigError(f"a group baseline needs groups of >= 2 completions dividing the batch; got group size "
                          f"{group_size} for {x_R.shape[0]} rows")
    return jnp.asarray(x_R, jnp.float32).reshape(-1, group_size)


def rloo_advantages(reward_R, group_size: int):
    """R_i − mean of the other k − 1 rewards of its group (rows grouped by prompt) → (R,)."""
    g = _groups(reward_R, group_size)
    others = (g.sum(axis=1, keepdims=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)


def grpo_advantages(reward_R, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-4):
    """(r_i − group mean) / (group std + eps) → (R,). The std is the sample one (ddof = 1, as TRL's
    `torch.std`); a group of equal rewards gets advantage 0."""
    g = _groups(reward_R, group_size)
    centred = g - g.mean(axis=1, keepdims=True)
    if scale_by_std:
        centred = centred / (jnp.std(g, axis=1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1)


def aggregate(loss_BxN, mask_BxN, how: str):
    """(sum, count) of per-token losses (0 where masked) by `how` (AGGREGATIONS)."""
    m = mask_BxN.astype(bool)
    n_B = m.sum(-1).astype(jnp.float32)
    if how == "token_mean":
        return jnp.sum(loss_BxN), n_B.sum()
    rows = (n_B > 0).astype(jnp.float32).sum()
    if how == "sequence_mean":
        return jnp.sum(jnp.sum(loss_BxN, axis=-1) / jnp.maximum(n_B, 1.0)), rows
    if how == "sequence_sum":
        return jnp.sum(loss_BxN), rows
    raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")


@dataclasses.dataclass(frozen=True)
class GroupLossConfig:
    model: ModelConfig
    num_response: int
    temperature: float = 1.0  # of the sampled policy π_T, whose ratio and KL the loss uses
    clip: float = 0.2  # ε of the clipped ratio
    kl_coef: float = 0.0  # β of the in-loss KL term (GRPO); 0 for RLOO, whose KL is in the reward
    kl_estimator: str = "k3"  # objectives.core.kl_per_token
    aggregation: str = "token_mean"  # AGGREGATIONS
    first_ratio: str = FIRST_RATIOS[0]  # as PPO (objectives.ppo.PPOLossConfig): own_logp | remat
    remat: bool = False  # rematerialise the forward (memory; first_ratio=remat)


def loss_fn(params, batch, *, frozen, config: GroupLossConfig, rng):
    """Clipped surrogate with per-completion advantages (+ β · KL to the reference per token) →
    (total, count by `aggregation`, metrics). `batch`: `sequence_BxL`, `sequence_mask_BxL`,
    `response_mask_BxN`, `old_logp_BxN`, `advantages_B` (the completion's, at each of its tokens) or
    `advantages_BxN` (per token: REINFORCE++'s returns) and, when β > 0, `ref_logp_BxN`."""
    del frozen, rng

    def forward(policy, seq, smask):
        return api.policy_forward(policy, None, seq, smask, model_cfg=config.model,
                                  num_response=config.num_response, temperature=config.temperature)

    out = (jax.checkpoint(forward) if config.remat else forward)(
        params["policy"], batch["sequence_BxL"], batch["sequence_mask_BxL"])
    mask = batch["response_mask_BxN"]
    adv_BxN = (batch["advantages_BxN"] if "advantages_BxN" in batch
               else jnp.broadcast_to(batch["advantages_B"][:, None], mask.shape))
    old_logp = rollout_logp(batch, out["logp_BxN"], config.first_ratio == "own_logp")
    loss_BxN, metrics = clipped_surrogate(out["logp_BxN"], old_logp, adv_BxN, mask, clip=config.clip)
    metrics["pg/loss_token_mean"] = masked_mean(loss_BxN, mask)
    if config.kl_coef > 0:
        kl = jnp.where(mask.astype(bool), kl_per_token(out["logp_BxN"], batch["ref_logp_BxN"], config.kl_estimator),
                       0.0)
        loss_BxN = loss_BxN + config.kl_coef * kl
        metrics["kl/loss_token_mean"] = masked_mean(kl, mask)
    metrics["policy/entropy"] = masked_mean(jax.lax.stop_gradient(out["entropy_BxN"]), mask)
    total, count = aggregate(loss_BxN, mask, config.aggregation)
    return total, count, metrics
