"""PPO-RLHF (Ziegler et al. 2019; lm-human-preferences; Bai et al. 2022): its rewards, advantages and loss.

One PPO iteration uses them in this order (`recipes/ppo.py` does the wiring):

    score_B ─normalise─▶ shaped_rewards(score, logp, ref_logp, mask, kl_coef) ─▶ rewards_BxT, kl_BxT
    [whiten(rewards, shift_mean=False)] ─▶ gae(rewards, values, mask) ─▶ advantages, returns
    whiten(advantages) ─▶ ppo_policy_loss + value_coef · value_loss [− ent_coef · entropy]

`experience_batch` is that first half as one jit; `loss_fn` the second, which the recipe runs for all
epochs × minibatches in one jit (`train.update.minibatch_update`). The shared math (masked reductions,
whitening, KL estimators, the clipped surrogate, the first ratio) is `objectives.core`'s.

Conventions. Token tensors are BxT and travel with a 0/1 mask; the response occupies one contiguous
run of mask-1 positions per row, at any offset (left-padded prompt before it, padding after it).
`logp_BxT` is the log-prob of the sampled token at its own position (as `models.api.token_logp`
gives it, at the rollout temperature: the distribution the tokens were sampled from). Values at masked
positions may be garbage (even NaN): they are removed with `jnp.where`, never multiplied by the mask.
Losses return (masked sum, count) so the mean is exact under padding and gradient accumulation (DESIGN
convention 10); metrics are means over this batch's mask.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives import kl_control
from rlhfjax.objectives.core import (EPS, as_bool, clipped_surrogate, f32, has_eos, kl_per_token, masked_mean,
                                     masked_sum, masked_var, normalise, rollout_logp, whiten)

# --------------------------------------------------------------------------------------------
# KL-shaped rewards


def last_token_onehot(mask_BxT):
    """1 at each row's last mask-1 position, 0 elsewhere (all 0 for an empty row)."""
    mask = as_bool(mask_BxT)
    T = mask.shape[-1]
    last = T - 1 - jnp.argmax(mask[:, ::-1], axis=-1)
    return jnp.where(mask, jax.nn.one_hot(last, T, dtype=jnp.float32), 0.0)


@flax.struct.dataclass
class ShapedRewards:
    rewards_BxT: jax.Array  # kl_penalty_BxT + score_BxT; 0 where masked
    kl_BxT: jax.Array  # the per-token KL that entered the rewards; 0 where masked
    kl_penalty_BxT: jax.Array  # −kl_coef · kl_BxT
    score_BxT: jax.Array  # score_B at each row's last response token, 0 elsewhere
    kl_seq_B: jax.Array  # kl_BxT summed over the response: the KL to log and to feed AdaptiveKL
    score_B: jax.Array  # score after clipping and the no-EOS penalty

    def metrics(self, kl_coef) -> dict:
        """Per-sequence means; `kl/seq_mean` is what `kl_control.update` should observe."""
        kl_seq_mean = jnp.mean(self.kl_seq_B)
        return {
            "kl/seq_mean": kl_seq_mean,
            "kl/sqrt": jnp.sqrt(jnp.maximum(kl_seq_mean, 0.0)),  # Gao et al.'s d
            "kl/coef": f32(kl_coef),
            "reward/score": jnp.mean(self.score_B),
            "reward/kl_penalty": jnp.mean(self.kl_penalty_BxT.sum(-1)),
            "reward/total": jnp.mean(self.rewards_BxT.sum(-1)),
        }


def shaped_rewards(score_B, logp_BxT, ref_logp_BxT, response_mask_BxT, *, kl_coef, kl_kind: str = "k1",
                   no_eos_penalty=None, has_eos_B=None, score_clip=None) -> ShapedRewards:
    """r_t = −β·kl_t on response tokens, plus the sequence score at each row's last response token.

    The score is first clipped to [−score_clip, score_clip] (if given), then *replaced* by
    `no_eos_penalty` where `has_eos_B` is False (lm-human-preferences' penalty for truncated
    responses; the penalty itself is not clipped). `kl_BxT` is returned so the caller logs exactly
    the tensor, and reduction, that was penalised. `kl_coef` may be a traced scalar (AdaptiveKL).
    """
    mask = as_bool(response_mask_BxT)
    score = f32(score_B)
    if score_clip is not None:
        score = jnp.clip(score, -score_clip, score_clip)
    if no_eos_penalty is not None:
        if has_eos_B is None:
            raise ValueError("no_eos_penalty needs has_eos_B")
        score = jnp.where(as_bool(has_eos_B), score, f32(no_eos_penalty))
    kl = jnp.where(mask, kl_per_token(logp_BxT, ref_logp_BxT, kl_kind), 0.0)
    kl_penalty = -f32(kl_coef) * kl
    score_BxT = last_token_onehot(mask) * score[:, None]
    return ShapedRewards(rewards_BxT=kl_penalty + score_BxT, kl_BxT=kl, kl_penalty_BxT=kl_penalty,
                         score_BxT=score_BxT, kl_seq_B=kl.sum(-1), score_B=score)


# --------------------------------------------------------------------------------------------
# Generalised advantage estimation


def gae(rewards_BxT, values_BxT, response_mask_BxT, *, gamma: float = 1.0, lam: float = 0.95):
    """GAE(γ, λ) over each row's response; returns (advantages_BxT, returns_BxT = A + V).

    The episode ends at the last response token: the value after it is 0 (a truncated response is
    treated as terminal, as in lm-human-preferences). Masked positions get A = R = 0 and pass the
    backward carry through unchanged, so padding after the response starts the recursion at 0 and
    a gap inside a row (e.g. environment tokens) is skipped rather than ending the episode.
    """
    mask = as_bool(response_mask_BxT)
    r = jnp.where(mask, f32(rewards_BxT), 0.0)
    v = jnp.where(mask, f32(values_BxT), 0.0)

    def step(carry, xs):
        next_value, next_adv = carry  # B, B: of the next *response* token (0 past the end)
        r_t, v_t, m_t = xs
        delta = r_t + gamma * next_value - v_t
        adv = delta + gamma * lam * next_adv
        adv = jnp.where(m_t, adv, 0.0)
        carry = (jnp.where(m_t, v_t, next_value), jnp.where(m_t, adv, next_adv))
        return carry, adv

    B = r.shape[0]
    init = (jnp.zeros((B,), jnp.float32), jnp.zeros((B,), jnp.float32))
    _, adv_TxB = jax.lax.scan(step, init, (r.T, v.T, mask.T), reverse=True)
    adv = adv_TxB.T
    return adv, jnp.where(mask, adv + v, 0.0)


# --------------------------------------------------------------------------------------------
# PPO losses


def ppo_policy_loss(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, *, clip: float = 0.2):
    """`clipped_surrogate` summed over the masked tokens → (sum, count, metrics)."""
    loss_BxT, metrics = clipped_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, clip=clip)
    return jnp.sum(loss_BxT), f32(as_bool(mask_BxT)).sum(), metrics


def value_loss(values_BxT, old_values_BxT, returns_BxT, mask_BxT, *, clip: float = 0.2):
    """½·max((v − R)², (v_clip − R)²) → (masked sum, count, metrics).

    v_clip = v_old + clip(v − v_old, ±ε) keeps the value update near the rollout's values.
    """
    mask = as_bool(mask_BxT)
    v = jnp.where(mask, f32(values_BxT), 0.0)
    old = jnp.where(mask, f32(old_values_BxT), 0.0)
    ret = jnp.where(mask, f32(returns_BxT), 0.0)
    v_clipped = old + jnp.clip(v - old, -clip, clip)
    err, err_clipped = jnp.square(v - ret), jnp.square(v_clipped - ret)
    total = masked_sum(0.5 * jnp.maximum(err, err_clipped), mask)
    metrics = {"value/clipfrac": masked_mean(jax.lax.stop_gradient(err_clipped > err), mask)}
    return total, f32(mask).sum(), metrics


def explained_variance(values_BxT, returns_BxT, mask_BxT):
    """1 − Var[R − V] / Var[R] over masked tokens: 1 = perfect, 0 = no better than the mean."""
    mask = as_bool(mask_BxT)
    v, ret = f32(values_BxT), f32(returns_BxT)
    return 1.0 - masked_var(ret - v, mask) / jnp.maximum(masked_var(ret, mask), EPS)


# --------------------------------------------------------------------------------------------
# Experience: normalised score → KL-shaped rewards → GAE → whitening (one jit)

EXPERIENCE_KEYS = ("sequence_BxL", "sequence_mask_BxL", "response_mask_BxN", "old_logp_BxN",
                   "old_values_BxN", "advantages_BxN", "returns_BxN")


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """Static settings of `experience_batch` (hashable: a jit static argument)."""

    kl_estimator: str = "k1"  # k1 | k2 | k3 (`kl_per_token`)
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False  # rescale (not shift) token rewards before GAE (lm-human-preferences)
    # Whitened over the whole rollout batch, once, before it is split into minibatches (as TRL's PPO trainer);
    # lm-human-preferences whitens each minibatch instead. The two agree with one minibatch; with several, ours
    # keeps the minibatches' advantages on one scale, theirs centres every minibatch at 0.
    whiten_advantages: bool = True
    score_clip: float | None = None  # clip the normalised RM score to ±score_clip
    no_eos_penalty: float | None = None  # replace the score of responses without EOS by this
    eos_id: int | None = None


@functools.partial(jax.jit, static_argnames=("cfg",))
def experience_batch(raw_score_B, logp_BxN, ref_logp_BxN, values_BxN, rollout, kl_state, gain, bias, *,
                     cfg: AdvantageConfig):
    """→ (experience dict `EXPERIENCE_KEYS`, ShapedRewards, metrics, next KL controller state).

    `rollout` is a `sampling.Rollout`. The score is normalised (gain·s + bias), shaped with −β·KL
    per token (β = `kl_state.coef`, the coefficient *before* this iteration's controller update),
    optionally whitened, then fed to GAE. The controller observes `mean(kl_seq_B)` of the very
    tensor in the rewards, which is also what `kl/seq_mean` logs.
    """
    mask = rollout.response_mask_BxN
    score = normalise(raw_score_B, gain, bias)
    eos_B = has_eos(rollout.tokens_BxN, mask, cfg.eos_id)
    shaped = shaped_rewards(score, logp_BxN, ref_logp_BxN, mask, kl_coef=kl_state.coef, kl_kind=cfg.kl_estimator,
                            no_eos_penalty=cfg.no_eos_penalty, has_eos_B=eos_B, score_clip=cfg.score_clip)
    rewards = shaped.rewards_BxT
    if cfg.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, values_BxN, mask, gamma=cfg.gamma, lam=cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    batch = {"sequence_BxL": rollout.sequence_BxL, "sequence_mask_BxL": rollout.sequence_mask_BxL,
             "response_mask_BxN": mask, "old_logp_BxN": logp_BxN, "old_values_BxN": values_BxN,
             "advantages_BxN": advantages, "returns_BxN": returns}
    metrics = shaped.metrics(kl_state.coef)
    metrics.pop("kl/coef")
    lengths = mask.sum(-1).astype(jnp.float32)
    fmask = mask.astype(bool)
    metrics.update({
        "kl/beta": kl_state.coef,
        "kl/token_mean": masked_mean(shaped.kl_BxT, mask),
        "reward/proxy": jnp.mean(score),  # normalised RM score, before clipping / no-EOS penalty
        "reward/proxy_raw": jnp.mean(raw_score_B),
        "reward/proxy_std": jnp.std(score),
        "response/length": jnp.mean(lengths),
        "response/eos_frac": jnp.mean(eos_B.astype(jnp.float32)),
        "value/mean": masked_mean(values_BxN, mask),
        "value/explained_variance": explained_variance(values_BxN, returns, mask),
        "advantage/mean": masked_mean(advantages, mask),
        "return/mean": masked_mean(returns, mask),
        "rollout/logp_mismatch": jnp.max(jnp.where(fmask, jnp.abs(rollout.logp_BxN - logp_BxN), 0.0)),
    })
    next_kl = kl_control.update(kl_state, metrics["kl/seq_mean"], mask.shape[0])
    return batch, shaped, metrics, next_kl


# --------------------------------------------------------------------------------------------
# Loss and the jitted epochs × minibatches update


@dataclasses.dataclass(frozen=True)
class PPOLossConfig:
    policy_model: ModelConfig
    value_model: ModelConfig | None  # None: params["value"] is a value head on the policy's hidden states
    num_response: int
    temperature: float = 1.0
    clip: float = 0.2  # ε of the clipped surrogate
    value_clip: float = 0.2  # ε of the clipped value loss
    value_coef: float = 0.1
    entropy_coef: float = 0.0
    # How the first minibatch's ratio is exactly 1 (π_θ = π_old there):
    #   own_logp: π_old on the update's first step is the loss's own log-prob, gradient stopped
    #             (`rollout_logp`); no extra compute, so remat is free to be off;
    #   remat:    the loss's forward is made the same XLA computation as the rollout's log-prob phase by
    #             rematerialising it (`remat` below must be True): without that, fusing the forward with the
    #             backward perturbs logits by ~1 ulp and the ratio is 1 only to ~5e-7. Costs about one
    #             extra forward per step (docs/benchmarks.md).
    first_ratio: str = "own_logp"
    # Rematerialise the policy/value forwards in the backward pass (activation memory; `first_ratio=remat`).
    remat: bool = False
    # What the rematerialised forwards keep for the backward (jax.checkpoint_policies): nothing_saveable
    # recomputes the whole forward; dots_saveable keeps the matmul outputs and recomputes the rest.
    remat_policy: str = "nothing_saveable"


def loss_fn(params, batch, *, frozen, config: PPOLossConfig, rng):
    """Clipped surrogate + value_coef · clipped value loss − entropy_coef · entropy, summed over
    response tokens → (total, tokens, metrics).

    `params = {"policy", "value"}`; `batch` is an experience minibatch (`EXPERIENCE_KEYS`).
    `frozen` and `rng` are unused (the KL to the reference is already in the rewards).
    """
    del frozen, rng
    seq, smask, mask = batch["sequence_BxL"], batch["sequence_mask_BxL"], batch["response_mask_BxN"]
    head_on_policy = config.value_model is None
    N = config.num_response

    def policy_fwd(policy, head, seq, smask):
        return api.policy_forward(policy, head, seq, smask, model_cfg=config.policy_model, num_response=N,
                                  temperature=config.temperature)

    def value_fwd(value, seq, smask):
        return api.values(value, config.value_model, seq, smask, start=seq.shape[1] - N)

    if config.remat:
        policy = getattr(jax.checkpoint_policies, config.remat_policy)
        policy_fwd, value_fwd = jax.checkpoint(policy_fwd, policy=policy), jax.checkpoint(value_fwd, policy=policy)
    out = policy_fwd(params["policy"], params["value"] if head_on_policy else None, seq, smask)
    logp, ent_BxN = out["logp_BxN"], out["entropy_BxN"]
    values = out["values_BxN"] if head_on_policy else value_fwd(params["value"], seq, smask)
    old_logp = rollout_logp(batch, logp, config.first_ratio == "own_logp")
    pg_sum, count, pg_metrics = ppo_policy_loss(logp, old_logp, batch["advantages_BxN"], mask, clip=config.clip)
    vf_sum, _, vf_metrics = value_loss(values, batch["old_values_BxN"], batch["returns_BxN"], mask,
                                       clip=config.value_clip)
    if config.entropy_coef == 0:
        ent_BxN = jax.lax.stop_gradient(ent_BxN)  # entropy is then only a metric
    ent_sum = masked_sum(ent_BxN, mask)
    denom = jnp.maximum(count, 1.0)
    total = pg_sum + config.value_coef * vf_sum - config.entropy_coef * ent_sum
    metrics = {**pg_metrics, **vf_metrics, "ppo/policy_loss": pg_sum / denom, "value/loss": vf_sum / denom,
               "policy/entropy": ent_sum / denom}
    return total, count, metrics
