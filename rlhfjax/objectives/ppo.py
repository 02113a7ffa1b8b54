"""PPO-RLHF math (Ziegler et al. 2019; lm-human-preferences; Bai et al. 2022) as pure jnp functions.

One PPO iteration uses them in this order (the recipe does the wiring):

    score_B ─normalise─▶ shaped_rewards(score, logp, ref_logp, mask, kl_coef) ─▶ rewards_BxT, kl_BxT
    [whiten(rewards, shift_mean=False)] ─▶ gae(rewards, values, mask) ─▶ advantages, returns
    whiten(advantages) ─▶ ppo_policy_loss + value_coef · value_loss [− ent_coef · entropy]

Conventions. Token tensors are BxT and travel with a 0/1 mask; the response occupies one contiguous
run of mask-1 positions per row, at any offset (left-padded prompt before it, padding after it).
`logp_BxT` is the log-prob of the sampled token at its own position (as `lm.token_logp` and the
sampler's `policy_logp_BxN` give it). Values at masked positions may be garbage (even NaN): they are
removed with `jnp.where`, never multiplied by the mask. Losses return (masked sum, count) so the
mean is exact under padding and gradient accumulation (DESIGN convention 10); metrics are means
over this batch's mask.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

EPS = 1e-8

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
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")


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


def ppo_policy_loss(logp_BxT, old_logp_BxT, advantages_BxT, mask_BxT, *, clip: float = 0.2):
    """Clipped surrogate max(−A·ρ, −A·clip(ρ, 1±ε)), ρ = π/π_old → (sum, count, metrics).

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
    total = masked_sum(jnp.maximum(unclipped, clipped), mask)
    count = _f32(mask).sum()
    ratio_sg, log_ratio_sg = jax.lax.stop_gradient(ratio), jax.lax.stop_gradient(log_ratio)
    metrics = {
        "ppo/clipfrac": masked_mean(jax.lax.stop_gradient(clipped > unclipped), mask),
        "ppo/approx_kl": masked_mean((ratio_sg - 1.0) - log_ratio_sg, mask),
        "ppo/ratio_mean": masked_mean(ratio_sg, mask),
        "ppo/ratio_max": jnp.max(jnp.where(mask, ratio_sg, -jnp.inf)),
        "ppo/ratio_min": jnp.min(jnp.where(mask, ratio_sg, jnp.inf)),
    }
    return total, count, metrics


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
    logits = _f32(logits_BxTxV)
    logp = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(logp)
    ent = -jnp.sum(p * jnp.where(p > 0, logp, 0.0), axis=-1)  # −inf logits contribute 0, no NaN
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
