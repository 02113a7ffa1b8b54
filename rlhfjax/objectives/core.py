"""The math every objective shares: masked reductions, whitening, KL estimators, reward normalisation,
the clipped surrogate and how a first minibatch's ratio is exactly 1.

Conventions. Token tensors are BxT and travel with a 0/1 mask. Values at masked positions may be garbage
(even NaN): they are removed with `jnp.where`, never multiplied by the mask. Losses built from these return
(masked sum, count) so means stay exact under padding and gradient accumulation (DESIGN convention 10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhfjax.choices import FIRST_RATIOS, KL_ESTIMATORS  # noqa: F401 (the vocabularies read here)
from rlhfjax.errors import ConfigError

EPS = 1e-8

# --------------------------------------------------------------------------------------------
# Masked reductions


def f32(x):
    return jnp.asarray(x, jnp.float32)


def as_bool(x):
    return jnp.asarray(x).astype(bool)


def masked_sum(x, mask):
    return jnp.sum(jnp.where(as_bool(mask), f32(x), 0.0))


def masked_mean(x, mask):
    """Mean over mask-1 entries (0 when the mask is empty)."""
    return masked_sum(x, mask) / jnp.maximum(f32(mask).sum(), 1.0)


def masked_var(x, mask):
    """Biased (population, ddof=0) variance over mask-1 entries, as lm-human-preferences' whiten."""
    mean = masked_mean(x, mask)
    return masked_mean(jnp.square(f32(x) - mean), mask)


def whiten(x_BxT, mask_BxT, shift_mean: bool = True):
    """(x − mean) / sqrt(var + 1e-8) with mean and *biased* variance over masked entries only.

    `shift_mean=False` adds the mean back (only rescales): lm-human-preferences uses it for rewards,
    whose mean carries the signal, and `shift_mean=True` for advantages. Masked entries become 0.
    """
    mask = as_bool(mask_BxT)
    x = f32(x_BxT)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * jax.lax.rsqrt(var + EPS)
    if not shift_mean:
        out = out + mean
    return jnp.where(mask, out, 0.0)


# --------------------------------------------------------------------------------------------
# KL between policy and reference, per sampled token


def kl_per_token(logp_BxT, ref_logp_BxT, kind: str = "k1"):
    """Per-token estimate of KL(π‖π_ref) from the log-probs of tokens *sampled from π*.

    With d = logp − ref_logp and r = π_ref/π = exp(−d) (Schulman, "Approximating KL divergence"):
      k1 = d                    unbiased, high variance, can be negative per token;
      k2 = ½ d²                 biased (unbiased only to second order as π_ref → π), always ≥ 0;
      k3 = (r − 1) − log r      unbiased, always ≥ 0, low variance when π ≈ π_ref.
    "Unbiased" needs the tokens to be drawn from the same π whose log-probs are passed, conditioned
    on the same prefix: then E[k1] = E[k3] = KL(π(·|prefix)‖π_ref(·|prefix)) per token, and by
    the chain rule the sum over a response is unbiased for the sequence KL. With temperature/top-p
    sampling or stale (off-policy) samples, all three are biased. Unmasked; the caller masks.
    """
    d = f32(logp_BxT) - f32(ref_logp_BxT)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * jnp.square(d)
    if kind == "k3":
        return jnp.expm1(-d) + d  # (r − 1) − log r with log r = −d; expm1 keeps it ≥ 0 near d = 0
    raise ConfigError(f"unknown KL estimator {kind!r}; expected one of {KL_ESTIMATORS}")


def sequence_kl(logp_BxT, ref_logp_BxT, mask_BxT, kind: str = "k1"):
    """Σ_t kl_per_token over each row's masked tokens → B."""
    return jnp.sum(jnp.where(as_bool(mask_BxT), kl_per_token(logp_BxT, ref_logp_BxT, kind), 0.0), axis=-1)


# --------------------------------------------------------------------------------------------
# Reward-model score normalisation


def fit_reward_normalisation(scores_N, target_mean: float = 0.0, target_std: float = 1.0):
    """(gain, bias) so that gain·scores + bias has the target mean and population std (ddof=0).

    lm-human-preferences fits this on scores of the *initial* policy's samples and keeps it fixed.
    """
    s = f32(scores_N).reshape(-1)
    gain = target_std / jnp.maximum(jnp.std(s), EPS)
    return gain, target_mean - gain * jnp.mean(s)


def normalise(scores, gain, bias):
    return gain * f32(scores) + bias


def has_eos(tokens_BxN, response_mask_BxN, eos_id):
    """Rows whose response holds the EOS token (all False without one)."""
    if eos_id is None:
        return jnp.zeros(tokens_BxN.shape[:1], bool)
    return jnp.any((tokens_BxN == eos_id) & response_mask_BxN.astype(bool), axis=-1)


# --------------------------------------------------------------------------------------------
# The clipped surrogate (PPO, RLOO/GRPO) and the first minibatch's ratio


def clipped_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, *, clip: float = 0.2):
    """Per-token clipped surrogate max(−A·ρ, −A·clip(ρ, 1±ε)), ρ = π/π_old → (loss_BxT, 0 where
    masked; metrics). PPO sums it over tokens; the group methods aggregate it their own ways.

    `ppo/approx_kl` estimates KL(π_old‖π) on the rollout tokens with (ρ − 1) − log ρ (k3: unbiased,
    ≥ 0); `ppo/clipfrac` is the fraction of tokens where the clipped term is the active one (its
    gradient is 0 there).
    """
    mask = as_bool(mask_BxT)
    log_ratio = jnp.where(mask, f32(logp_BxT) - f32(old_logp_BxT), 0.0)
    ratio = jnp.exp(log_ratio)
    adv = jnp.where(mask, f32(advantages_BxT), 0.0)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    ratio_sg, log_ratio_sg = jax.lax.stop_gradient(ratio), jax.lax.stop_gradient(log_ratio)
    metrics = {
        "ppo/clipfrac": masked_mean(jax.lax.stop_gradient(clipped > unclipped), mask),
        "ppo/approx_kl": masked_mean((ratio_sg - 1.0) - log_ratio_sg, mask),
        "ppo/ratio_mean": masked_mean(ratio_sg, mask),
        "ppo/ratio_max": jnp.max(jnp.where(mask, ratio_sg, -jnp.inf)),
        "ppo/ratio_min": jnp.min(jnp.where(mask, ratio_sg, jnp.inf)),
    }
    return jnp.where(mask, jnp.maximum(unclipped, clipped), 0.0), metrics


def check_first_ratio(first_ratio: str, remat: bool, section: str = "ppo") -> None:
    """`first_ratio` (FIRST_RATIOS): own_logp takes π_old on the update's first step from the loss's own
    forward (`rollout_logp`), free; remat makes the loss's forward the same XLA computation as the rollout's
    log-prob phase by rematerialising it, so it needs `remat`."""
    if first_ratio not in FIRST_RATIOS:
        raise ConfigError(f"{section}.first_ratio must be one of {FIRST_RATIOS}, got {first_ratio!r}")
    if first_ratio == "remat" and not remat:
        raise ConfigError(f"{section}.first_ratio='remat' needs {section}.remat=True",
                          f"set {section}.remat=True, or {section}.first_ratio='own_logp'")


def rollout_logp(batch, logp_BxN, own_first_pass: bool):
    """π_old's log-probs for the ratio. `own_first_pass`: on the update's first minibatch (`update_step_B`
    0, the params that sampled the rollout) the loss's own log-probs, gradient stopped, so the ratio is
    exactly 1 there whatever XLA does to the forward; later steps use the rollout's `old_logp_BxN`."""
    old = batch["old_logp_BxN"]
    if not own_first_pass or "update_step_B" not in batch:
        return old
    first = (batch["update_step_B"] == 0)[:, None]
    return jnp.where(first, jax.lax.stop_gradient(logp_BxN), old)


def summarise_update(metrics) -> dict:
    """Per-iteration view of an update's metrics stacked over its E·M steps (`train.update.minibatch_update`):
    means, the ratio's extremes over every step, and the first and last steps' ratio and approximate KL."""
    out = {k: jnp.mean(v) for k, v in metrics.items() if k not in ("ppo/ratio_max", "ppo/ratio_min")}
    out["ppo/ratio_max"] = jnp.max(metrics["ppo/ratio_max"])
    out["ppo/ratio_min"] = jnp.min(metrics["ppo/ratio_min"])
    out["ppo/ratio_first_max"] = metrics["ppo/ratio_max"][0]
    out["ppo/ratio_first_min"] = metrics["ppo/ratio_min"][0]
    out["ppo/approx_kl_first"] = metrics["ppo/approx_kl"][0]
    out["ppo/approx_kl_last"] = metrics["ppo/approx_kl"][-1]
    return out
