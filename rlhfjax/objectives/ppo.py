"""PPO-RLHF (Ziegler et al. 2019; lm-human-preferences; Bai et al. 2022): math, loss and update.

One PPO iteration uses them in this order (`recipes/ppo.py` does the wiring):

    score_B ─normalise─▶ shaped_rewards(score, logp, ref_logp, mask, kl_coef) ─▶ rewards_BxT, kl_BxT
    [whiten(rewards, shift_mean=False)] ─▶ gae(rewards, values, mask) ─▶ advantages, returns
    whiten(advantages) ─▶ ppo_policy_loss + value_coef · value_loss [− ent_coef · entropy]

`experience_batch` is that first half as one jit; `loss_fn` the second, and `ppo_update` runs all
epochs × minibatches of it in one jit.

Conventions. Token tensors are BxT and travel with a 0/1 mask; the response occupies one contiguous
run of mask-1 positions per row, at any offset (left-padded prompt before it, padding after it).
`logp_BxT` is the log-prob of the sampled token at its own position (as `models.api.token_logp`
gives it, at the rollout temperature: the distribution the tokens were sampled from). Values at masked positions may be garbage (even NaN): they are
removed with `jnp.where`, never multiplied by the mask. Losses return (masked sum, count) so the
mean is exact under padding and gradient accumulation (DESIGN convention 10); metrics are means
over this batch's mask.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives import kl_control
from rlhfjax.train.update import minibatch_update

EPS = 1e-8
KL_ESTIMATORS = ("k1", "k2", "k3")  # kl_per_token

# --------------------------------------------------------------------------------------------
# Masked reductions


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def _bool(x):
    return jnp.asarray(x).astype(bool)


def masked_sum(x, mask):
    return jnp.sum(jnp.where(_bool(mask), _f32(x), 0.0))


def masked_mean(x, mask):
    """Mean over mask-1 entries (0 when the mask is empty)."""
    return masked_sum(x, mask) / jnp.maximum(_f32(mask).sum(), 1.0)


def masked_var(x, mask):
    """Biased (population, ddof=0) variance over mask-1 entries, as lm-human-preferences' whiten."""
    mean = masked_mean(x, mask)
    return masked_mean(jnp.square(_f32(x) - mean), mask)


def whiten(x_BxT, mask_BxT, shift_mean: bool = True):
    """(x − mean) / sqrt(var + 1e-8) with mean and *biased* variance over masked entries only.

    `shift_mean=False` adds the mean back (only rescales): lm-human-preferences uses it for rewards,
    whose mean carries the signal, and `shift_mean=True` for advantages. Masked entries become 0.
    """
    mask = _bool(mask_BxT)
    x = _f32(x_BxT)
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
    d = _f32(logp_BxT) - _f32(ref_logp_BxT)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * jnp.square(d)
    if kind == "k3":
        return jnp.expm1(-d) + d  # (r − 1) − log r with log r = −d; expm1 keeps it ≥ 0 near d = 0
    raise ConfigError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")


# --------------------------------------------------------------------------------------------
# Reward-model score normalisation and KL-shaped rewards


def fit_reward_normalisation(scores_N, target_mean: float = 0.0, target_std: float = 1.0):
    """(gain, bias) so that gain·scores + bias has the target mean and population std (ddof=0).

    lm-human-preferences fits this on scores of the *initial* policy's samples and keeps it fixed.
    """
    s = _f32(scores_N).reshape(-1)
    gain = target_std / jnp.maximum(jnp.std(s), EPS)
    return gain, target_mean - gain * jnp.mean(s)


def normalise(scores, gain, bias):
    return gain * _f32(scores) + bias


def last_token_onehot(mask_BxT):
    """1 at each row's last mask-1 position, 0 elsewhere (all 0 for an empty row)."""
    mask = _bool(mask_BxT)
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
            "kl/coef": _f32(kl_coef),
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
    mask = _bool(response_mask_BxT)
    score = _f32(score_B)
    if score_clip is not None:
        score = jnp.clip(score, -score_clip, score_clip)
    if no_eos_penalty is not None:
        if has_eos_B is None:
            raise ValueError("no_eos_penalty needs has_eos_B")
        score = jnp.where(_bool(has_eos_B), score, _f32(no_eos_penalty))
    kl = jnp.where(mask, kl_per_token(logp_BxT, ref_logp_BxT, kl_kind), 0.0)
    kl_penalty = -_f32(kl_coef) * kl
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
    mask = _bool(response_mask_BxT)
    r = jnp.where(mask, _f32(rewards_BxT), 0.0)
    v = jnp.where(mask, _f32(values_BxT), 0.0)

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


def clipped_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, *, clip: float = 0.2):
    """Per-token clipped surrogate max(−A·ρ, −A·clip(ρ, 1±ε)), ρ = π/π_old → (loss_BxT, 0 where
    masked; metrics). Shared by PPO (token sums) and the group methods (other aggregations).

    `ppo/approx_kl` estimates KL(π_old‖π) on the rollout tokens with (ρ − 1) − log ρ (k3: unbiased,
    ≥ 0); `ppo/clipfrac` is the fraction of tokens where the clipped term is the active one (its
    gradient is 0 there).
    """
    mask = _bool(mask_BxT)
    log_ratio = jnp.where(mask, _f32(logp_BxT) - _f32(old_logp_BxT), 0.0)
    ratio = jnp.exp(log_ratio)
    adv = jnp.where(mask, _f32(advantages_BxT), 0.0)
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


FIRST_RATIOS = ("own_logp", "remat")


def check_first_ratio(first_ratio: str, remat: bool, section: str = "ppo") -> None:
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


def ppo_policy_loss(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, *, clip: float = 0.2):
    """`clipped_surrogate` summed over the masked tokens → (sum, count, metrics)."""
    loss_BxT, metrics = clipped_surrogate(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, clip=clip)
    return jnp.sum(loss_BxT), _f32(_bool(mask_BxT)).sum(), metrics


def value_loss(values_BxT, old_values_BxT, returns_BxT, mask_BxT, *, clip: float = 0.2):
    """½·max((v − R)², (v_clip − R)²) → (masked sum, count, metrics).

    v_clip = v_old + clip(v − v_old, ±ε) keeps the value update near the rollout's values.
    """
    mask = _bool(mask_BxT)
    v = jnp.where(mask, _f32(values_BxT), 0.0)
    old = jnp.where(mask, _f32(old_values_BxT), 0.0)
    ret = jnp.where(mask, _f32(returns_BxT), 0.0)
    v_clipped = old + jnp.clip(v - old, -clip, clip)
    err, err_clipped = jnp.square(v - ret), jnp.square(v_clipped - ret)
    total = masked_sum(0.5 * jnp.maximum(err, err_clipped), mask)
    metrics = {"value/clipfrac": masked_mean(jax.lax.stop_gradient(err_clipped > err), mask)}
    return total, _f32(mask).sum(), metrics


def entropy_from_logits(logits_BxTxV, mask_BxT, *, shift: bool = True):
    """(masked sum, count) of the policy entropy H(π(·|prefix)) at the masked positions.

    `shift=True` aligns like `lm.token_logp`: position t holds the entropy of the distribution that
    predicted token t, i.e. from logits[:, t−1], so the response mask of `logp_BxT` applies as is
    (position 0 never counts). `shift=False`: logits[:, t] is already the distribution of token t.
    """
    ent = api.entropy(logits_BxTxV)
    mask = _bool(mask_BxT)
    if shift:
        ent = jnp.pad(ent[:, :-1], ((0, 0), (1, 0)))
        mask = mask.at[:, 0].set(False)
    return masked_sum(ent, mask), _f32(mask).sum()


def explained_variance(values_BxT, returns_BxT, mask_BxT):
    """1 − Var[R − V] / Var[R] over masked tokens: 1 = perfect, 0 = no better than the mean."""
    mask = _bool(mask_BxT)
    v, ret = _f32(values_BxT), _f32(returns_BxT)
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
    whiten_advantages: bool = True
    score_clip: float | None = None  # clip the normalised RM score to ±score_clip
    no_eos_penalty: float | None = None  # replace the score of responses without EOS by this
    eos_id: int | None = None


def has_eos(tokens_BxN, response_mask_BxN, eos_id):
    if eos_id is None:
        return jnp.zeros(tokens_BxN.shape[:1], bool)
    return jnp.any((tokens_BxN == eos_id) & response_mask_BxN.astype(bool), axis=-1)


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


def policy_forward(policy_params, value_head, seq_BxL, mask_BxL, *, model_cfg: ModelConfig, num_response: int,
                   temperature: float):
    """`api.policy_outputs` for the last `num_response` slots: the forward the rollout's log-prob
    phase and the loss share (the same function on both sides keeps the first ratio exactly 1)."""
    return api.policy_outputs(policy_params, model_cfg, seq_BxL, mask_BxL, start=seq_BxL.shape[1] - num_response,
                              temperature=temperature, value_head=value_head)


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
        return policy_forward(policy, head, seq, smask, model_cfg=config.policy_model, num_response=N,
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


def ppo_update(state, batch, rng, *, loss_config: PPOLossConfig, epochs: int, num_minibatches: int):
    """All PPO epochs × minibatches in one jit (`train.update.minibatch_update` of `loss_fn`, a fresh
    permutation per epoch) → (state, metrics stacked over the E·M steps). `state` is donated."""
    return minibatch_update(state, batch, None, rng, loss_fn=loss_fn, config=loss_config, epochs=epochs,
                            num_minibatches=num_minibatches)


def summarise_update(metrics) -> dict:
    """Per-iteration view of the stacked (E·M) update metrics: means, plus first-minibatch and extremes."""
    out = {k: jnp.mean(v) for k, v in metrics.items() if k not in ("ppo/ratio_max", "ppo/ratio_min")}
    out["ppo/ratio_max"] = jnp.max(metrics["ppo/ratio_max"])
    out["ppo/ratio_min"] = jnp.min(metrics["ppo/ratio_min"])
    out["ppo/ratio_first_max"] = metrics["ppo/ratio_max"][0]
    out["ppo/ratio_first_min"] = metrics["ppo/ratio_min"][0]
    out["ppo/approx_kl_first"] = metrics["ppo/approx_kl"][0]
    out["ppo/approx_kl_last"] = metrics["ppo/approx_kl"][-1]
    return out
