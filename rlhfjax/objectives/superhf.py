"""SuperHF (Mukobi et al. 2023, "SuperHF: Supervised Iterative Learning from Human Feedback").

Each step samples a *superbatch* of S completions per prompt from the current policy, scores them
with the reward model, keeps the top k per prompt (`top_k_per_group`) and takes a supervised step
on the kept completions: token NLL plus β times a KL prior to the frozen reference (`loss_fn`). No
value model, no importance ratio: the filter does the policy improvement, the prior holds the
policy near the reference.

The KL prior, as in the official code (openfeedback/superhf, `SuperHFTrainer.finetune_language_model`):
at every kept completion token, the KL over the whole vocabulary between the reference's and the
policy's next-token distributions, KL(π_ref ‖ π_θ) (`kl_prior="ref_policy"`, the code's
`KLDivLoss(log_target=True)(logp_policy, logp_ref)`); per completion it is averaged over tokens and
clamped at ≥ 0 (the code's guard against "negative KL gaming"; the exact full-vocabulary KL is ≥ 0,
so the clamp only removes rounding). `kl_prior="policy_ref"` uses KL(π_θ ‖ π_ref) per token instead,
the direction PPO's per-token penalty estimates. Both use the model's own distribution (T = 1), the
one the NLL trains, whatever temperature the completions were sampled at.

Loss (sums and counts, DESIGN convention 10): total = Σ_tokens NLL + β · Σ_completions n_i ·
max(mean_t KL_i,t, 0), count = kept tokens. So the step minimises the token-mean NLL plus β times the
token-weighted mean of the per-completion KL (the official code adds β·KL_i for each completion of a
minibatch, i.e. weights completions equally and sums them; with its top-1 × 2 prompts per step that
is 2β on their mean: see the config comments).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.choices import KL_PRIORS  # noqa: F401 (KL(π_ref ‖ π_θ) (official) | KL(π_θ ‖ π_ref))
from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives.core import masked_mean


def top_k_per_group(score_R, group_size: int, k: int, valid_R=None):
    """Row indices of the k highest scores within each group of `group_size` consecutive rows
    (rows [i·S, (i+1)·S) are prompt i's), best first; ties go to the lower row index (`lax.top_k`
    is stable). Rows with `valid_R` False rank below every valid row (kept only when a group has
    fewer than k valid rows). → int32 (G·k,), groups in order."""
    if not 1 <= k <= group_size or score_R.shape[0] % group_size:
        raise ValueError(f"need 1 <= k={k} <= group_size={group_size} dividing {score_R.shape[0]} rows")
    groups = jnp.asarray(score_R, jnp.float32).reshape(-1, group_size)
    rank_key = groups if valid_R is None else jnp.where(valid_R.reshape(-1, group_size), groups, -jnp.inf)
    order = jnp.argsort(-rank_key, axis=1, stable=True)[:, :k]
    return (jnp.arange(groups.shape[0])[:, None] * group_size + order).reshape(-1).astype(jnp.int32)


def kl_prior(kl_BxN, mask_BxN):
    """(Σ_i n_i · max(mean_t KL_i,t, 0), per-completion mean KL_B) of the per-token vocabulary KL of the chosen
    direction (`prior_kl`): the module docstring's prior."""
    m = mask_BxN.astype(bool)
    n = m.sum(-1).astype(jnp.float32)
    mean_B = jnp.sum(jnp.where(m, kl_BxN, 0.0), axis=-1) / jnp.maximum(n, 1.0)
    return jnp.sum(n * jnp.maximum(mean_B, 0.0)), mean_B


def prior_kl(policy_params, policy_out, ref_params, ref_out, cfg: ModelConfig, kind: str = "ref_policy"):
    """Per-token KL over the vocabulary between the reference and the policy (`policy_outputs` of each on the
    same slots), in the direction `kind` (KL_PRIORS) → BxN."""
    if kind == "ref_policy":
        return api.response_vocab_kl(ref_params, ref_out, policy_params, policy_out, cfg)
    if kind == "policy_ref":
        return api.response_vocab_kl(policy_params, policy_out, ref_params, ref_out, cfg)
    raise ValueError(f"kl_prior must be one of {KL_PRIORS}, got {kind!r}")


@dataclasses.dataclass(frozen=True)
class SuperHFLossConfig:
    model: ModelConfig
    num_response: int
    kl_coef: float = 0.35  # β (official default)
    kl_prior: str = "ref_policy"  # KL_PRIORS


def loss_fn(params, batch, *, frozen, config: SuperHFLossConfig, rng):
    """NLL of the kept completions + β · KL prior → (total, kept tokens, metrics).

    `params = {"policy": ...}`; `frozen` = the reference policy's params; `batch` holds the kept
    completions: `sequence_BxL`, `sequence_mask_BxL`, `response_mask_BxN` (last N slots)."""
    del rng
    seq, smask, mask = batch["sequence_BxL"], batch["sequence_mask_BxL"], batch["response_mask_BxN"]
    kw = dict(model_cfg=config.model, num_response=config.num_response, temperature=1.0)
    out = api.policy_forward(params["policy"], None, seq, smask, **kw)
    m = mask.astype(bool)
    count = m.sum().astype(jnp.float32)
    nll = -jnp.sum(jnp.where(m, out["logp_BxN"], 0.0))
    metrics = {"superhf/nll": nll / jnp.maximum(count, 1.0)}
    total = nll
    if config.kl_coef > 0:
        frozen = jax.lax.stop_gradient(frozen)
        ref = jax.lax.stop_gradient(api.policy_forward(frozen, None, seq, smask, **kw))
        kl = prior_kl(params["policy"], out, frozen, ref, config.model, config.kl_prior)
        prior, kl_B = kl_prior(kl, mask)
        total = total + config.kl_coef * prior
        metrics["superhf/kl_prior"] = jnp.mean(kl_B)
    metrics["policy/entropy"] = masked_mean(jax.lax.stop_gradient(out["entropy_BxN"]), mask)
    return total, count, metrics
