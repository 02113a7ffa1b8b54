"""PPO-RLHF experience: rollout → score → reference log-probs → values → shaped rewards → GAE.

Each phase is one `jax.jit` (so the recipe can time them separately); frozen models (reference
policy, reward model) are arguments, never closed over:

    generate    rlhfjax.sampling.sample(policy)            → Rollout (sequence_BxL = prompt ⧺ response)
    policy      response_logp(policy params, sequence)     → logp_BxN      (π_old of the PPO ratio)
    reference   response_logp(reference params, sequence)  → ref_logp_BxN
    score       sequence_scores(reward params, sequence)   → score_B       (RM at the last token)
    values      response_values(value params, sequence)    → values_BxN
    advantages  advantage_phase(...)                       → experience batch, ShapedRewards, metrics,
                                                              next KL controller

Alignment: the prompt occupies slots [0, P) (left-padded), response token j sits at slot P + j and
N = L − P. `logp_BxN[:, j]` is log π(token_j | prefix) from the logits at slot P + j − 1, and
`values_BxN[:, j]` is V(prefix) read at the same slot P + j − 1 (the state in which token j was
chosen), as in lm-human-preferences. All log-probs are of the *temperature-scaled* policy
(logits / T), the distribution the rollout samples from, so k1/k3 KL estimates on rollout tokens
are unbiased and, at the first PPO minibatch, the ratio is exactly 1.

π_old is recomputed by teacher forcing (not taken from the sampler): the same function computes π
in the loss, so ratio = 1 holds bit for bit; `rollout/logp_mismatch` logs the largest difference
from the sampler's own log-probs as a check on the KV-cache decode. Bit for bit needs the same XLA
computation on both sides: the teacher-forced phases run in chunks of `chunk_size` rows (= the PPO
minibatch, `lax.map`), because the CPU/GPU matmul kernels' summation order depends on the batch
dimension, and the loss rematerialises its forward (see `recipes.ppo.PPOLossConfig.remat`). Chunking
also bounds the activation memory of large rollout batches.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp

from rlhfjax.models import (ModelConfig, ScalarModel, Transformer, ValueHead, last_token_index, positions_from_mask,
                            read_at)
from rlhfjax.objectives import kl_control
from rlhfjax.objectives import ppo as ppo_math
from rlhfjax.sampling import Rollout, SamplingConfig, sample

# Keys of the experience batch PPO trains on (one row per rollout; all static shapes).
EXPERIENCE_KEYS = ("sequence_BxL", "sequence_mask_BxL", "response_mask_BxN", "old_logp_BxN",
                   "old_values_BxN", "advantages_BxN", "returns_BxN")


@dataclasses.dataclass(frozen=True)
class ExperienceConfig:
    """Static settings of the experience phases (hashable: a jit static argument)."""

    policy_model: ModelConfig
    reward_model: ModelConfig
    value_model: ModelConfig | None  # None: a value head on the policy (value params = its head)
    temperature: float = 1.0
    kl_estimator: str = "k1"  # k1 | k2 | k3 (objectives.ppo.kl_per_token)
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False  # rescale (not shift) token rewards before GAE (lm-human-preferences)
    whiten_advantages: bool = True
    score_clip: float | None = None  # clip the normalised RM score to ±score_clip
    no_eos_penalty: float | None = None  # replace the score of responses without EOS by this
    eos_id: int | None = None
    pad_id: int = 0  # written after EOS in sampled responses
    chunk_size: int | None = None  # rows per teacher-forced forward (None = whole batch); PPO: the minibatch


# --------------------------------------------------------------------------------------------
# Model evaluations on a rollout sequence (pure; jitted below)


def policy_forward(params, sequence_BxL, mask_BxL, *, model_cfg: ModelConfig, num_response: int,
                   temperature: float = 1.0, value_head=None):
    """One policy forward → `{"logp_BxN", "logits_BxNxV"}` (+ `"values_BxN"` given `value_head`).

    `logp_BxN[:, j]` = log π_T(token_j | prefix) (0 where masked); `logits_BxNxV` are the
    temperature-scaled logits that predicted each response token (for the entropy). `value_head`
    (params of `models.ValueHead`) reads V(prefix) off the same final hidden states: a policy with a
    value head, whose value loss also trains the shared backbone.
    """
    L = sequence_BxL.shape[1]
    P = L - num_response
    out = Transformer(model_cfg).apply({"params": params}, sequence_BxL, positions_from_mask(mask_BxL), mask_BxL)
    logits = out.logits[:, P - 1:L - 1].astype(jnp.float32) / temperature
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), sequence_BxL[:, P:, None], -1)[..., 0]
    valid = mask_BxL[:, P:].astype(bool)
    result = {"logp_BxN": jnp.where(valid, lp, 0.0), "logits_BxNxV": logits}
    if value_head is not None:
        values = ValueHead().apply({"params": value_head}, out.hidden[:, P - 1:L - 1])
        result["values_BxN"] = jnp.where(valid, values, 0.0)
    return result


def response_logp(params, sequence_BxL, mask_BxL, *, model_cfg: ModelConfig, num_response: int,
                  temperature: float = 1.0, return_logits: bool = False):
    """log π_T(token_j | prefix) for the last `num_response` slots (0 where masked); with
    `return_logits`, also the T-scaled logits that predicted them (see `policy_forward`)."""
    out = policy_forward(params, sequence_BxL, mask_BxL, model_cfg=model_cfg, num_response=num_response,
                         temperature=temperature)
    return (out["logp_BxN"], out["logits_BxNxV"]) if return_logits else out["logp_BxN"]


def response_logp_values(params, sequence_BxL, mask_BxL, *, model_cfg: ModelConfig, num_response: int,
                         temperature: float = 1.0):
    """(logp_BxN, values_BxN) of a policy with a value head: `params = (policy, value head)`."""
    out = policy_forward(params[0], sequence_BxL, mask_BxL, model_cfg=model_cfg, num_response=num_response,
                         temperature=temperature, value_head=params[1])
    return out["logp_BxN"], out["values_BxN"]


def response_values(params, sequence_BxL, mask_BxL, *, model_cfg: ModelConfig, num_response: int):
    """V(prefix of token j) for each response slot j: scalars read at slot P + j − 1 (0 where masked)."""
    L = sequence_BxL.shape[1]
    P = L - num_response
    scalars = ScalarModel(model_cfg).apply({"params": params}, sequence_BxL, positions_from_mask(mask_BxL),
                                           mask_BxL)
    return jnp.where(mask_BxL[:, P:].astype(bool), scalars[:, P - 1:L - 1], 0.0)


def sequence_scores(params, sequence_BxL, mask_BxL, *, model_cfg: ModelConfig):
    """Reward-model score of each sequence, read at its last real token (HF's convention)."""
    scalars = ScalarModel(model_cfg).apply({"params": params}, sequence_BxL, positions_from_mask(mask_BxL),
                                           mask_BxL)
    return read_at(scalars, last_token_index(mask_BxL))


def in_chunks(fn, chunk_size: int | None):
    """`fn(params, sequence_BxL, mask_BxL)` evaluated `chunk_size` rows at a time (`lax.map`)."""

    def chunked(params, sequence_BxL, mask_BxL, **kw):
        B = sequence_BxL.shape[0]
        if not chunk_size or chunk_size >= B:
            return fn(params, sequence_BxL, mask_BxL, **kw)
        if B % chunk_size:
            raise ValueError(f"batch {B} is not divisible by chunk_size={chunk_size}")
        n = B // chunk_size
        out = jax.lax.map(lambda a: fn(params, a[0], a[1], **kw),
                          (sequence_BxL.reshape(n, chunk_size, -1), mask_BxL.reshape(n, chunk_size, -1)))
        return jax.tree.map(lambda x: x.reshape(B, *x.shape[2:]), out)

    return chunked


def _phase(fn, *static):
    @functools.partial(jax.jit, static_argnames=(*static, "chunk_size"))
    def phase(params, sequence_BxL, mask_BxL, chunk_size=None, **kw):
        return in_chunks(fn, chunk_size)(params, sequence_BxL, mask_BxL, **kw)

    phase.__doc__ = f"Jitted, optionally chunked `{fn.__name__}`."
    return phase


logp_phase = _phase(response_logp, "model_cfg", "num_response", "temperature")
logp_value_phase = _phase(response_logp_values, "model_cfg", "num_response", "temperature")
value_phase = _phase(response_values, "model_cfg", "num_response")
score_phase = _phase(sequence_scores, "model_cfg")


def has_eos(tokens_BxN, response_mask_BxN, eos_id):
    if eos_id is None:
        return jnp.zeros(tokens_BxN.shape[:1], bool)
    return jnp.any((tokens_BxN == eos_id) & response_mask_BxN.astype(bool), axis=-1)


# --------------------------------------------------------------------------------------------
# Shaped rewards, GAE, whitening


@functools.partial(jax.jit, static_argnames=("cfg",))
def advantage_phase(raw_score_B, logp_BxN, ref_logp_BxN, values_BxN, rollout: Rollout, kl_state, gain, bias, *,
                    cfg: ExperienceConfig):
    """→ (experience dict, ShapedRewards, metrics, next KL controller state).

    The score is normalised (gain·s + bias), shaped with −β·KL per token (β = `kl_state.coef`,
    the coefficient *before* this iteration's controller update), optionally whitened, then fed
    to GAE. The controller observes `mean(kl_seq_B)` of the very tensor in the rewards, which is
    also what `kl/seq_mean` logs.
    """
    mask = rollout.response_mask_BxN
    score = ppo_math.normalise(raw_score_B, gain, bias)
    eos_B = has_eos(rollout.tokens_BxN, mask, cfg.eos_id)
    shaped = ppo_math.shaped_rewards(score, logp_BxN, ref_logp_BxN, mask, kl_coef=kl_state.coef,
                                     kl_kind=cfg.kl_estimator, no_eos_penalty=cfg.no_eos_penalty,
                                     has_eos_B=eos_B, score_clip=cfg.score_clip)
    rewards = shaped.rewards_BxT
    if cfg.whiten_rewards:
        rewards = ppo_math.whiten(rewards, mask, shift_mean=False)
    advantages, returns = ppo_math.gae(rewards, values_BxN, mask, gamma=cfg.gamma, lam=cfg.lam)
    if cfg.whiten_advantages:
        advantages = ppo_math.whiten(advantages, mask)
    batch = {"sequence_BxL": rollout.sequence_BxL, "sequence_mask_BxL": rollout.sequence_mask_BxL,
             "response_mask_BxN": mask, "old_logp_BxN": logp_BxN, "old_values_BxN": values_BxN,
             "advantages_BxN": advantages, "returns_BxN": returns}
    B = mask.shape[0]
    metrics = shaped.metrics(kl_state.coef)
    metrics.pop("kl/coef")
    lengths = mask.sum(-1).astype(jnp.float32)
    fmask = mask.astype(bool)
    metrics.update({
        "kl/beta": kl_state.coef,
        "kl/token_mean": ppo_math.masked_mean(shaped.kl_BxT, mask),
        "reward/proxy": jnp.mean(score),  # normalised RM score, before clipping / no-EOS penalty
        "reward/proxy_raw": jnp.mean(raw_score_B),
        "reward/proxy_std": jnp.std(score),
        "response/length": jnp.mean(lengths),
        "response/eos_frac": jnp.mean(eos_B.astype(jnp.float32)),
        "value/mean": ppo_math.masked_mean(values_BxN, mask),
        "value/explained_variance": ppo_math.explained_variance(values_BxN, returns, mask),
        "advantage/mean": ppo_math.masked_mean(advantages, mask),
        "return/mean": ppo_math.masked_mean(returns, mask),
        "rollout/logp_mismatch": jnp.max(jnp.where(fmask, jnp.abs(rollout.logp_BxN - logp_BxN), 0.0)),
    })
    next_kl = kl_control.update(kl_state, metrics["kl/seq_mean"], B)
    return batch, shaped, metrics, next_kl


# --------------------------------------------------------------------------------------------
# One iteration's experience, phase by phase (host orchestration with timings)


def _ready(tree):
    return jax.block_until_ready(tree)


def collect(policy_params, value_params, *, reference_params, reward_params, prompt_BxP, prompt_mask_BxP,
            rng, kl_state, gain, bias, cfg: ExperienceConfig, num_response: int, timed: bool = True):
    """Run every phase on one prompt batch. Returns a dict with `batch` (for `ppo_update`),
    `rollout`, `shaped`, `metrics` (jnp scalars, `time/*` added as floats), `kl_state` (next)."""
    times = {}
    t = time.perf_counter()

    def lap(name, out):
        nonlocal t
        if timed:
            _ready(out)
            now = time.perf_counter()
            times[f"time/{name}"] = now - t
            t = now
        return out

    scfg = SamplingConfig(max_new_tokens=num_response, temperature=cfg.temperature, eos_id=cfg.eos_id,
                          pad_id=cfg.pad_id)
    rollout = lap("generate", sample(policy_params, prompt_BxP, prompt_mask_BxP, rng,
                                     model_cfg=cfg.policy_model, cfg=scfg))
    seq, smask = rollout.sequence_BxL, rollout.sequence_mask_BxL
    chunk = cfg.chunk_size
    if cfg.value_model is None:  # value head on the policy: one forward gives both
        logp, values = lap("policy_logp", logp_value_phase(
            (policy_params, value_params), seq, smask, model_cfg=cfg.policy_model, num_response=num_response,
            temperature=cfg.temperature, chunk_size=chunk))
    else:
        logp = lap("policy_logp", logp_phase(policy_params, seq, smask, model_cfg=cfg.policy_model,
                                             num_response=num_response, temperature=cfg.temperature,
                                             chunk_size=chunk))
    ref_logp = lap("reference", logp_phase(reference_params, seq, smask, model_cfg=cfg.policy_model,
                                           num_response=num_response, temperature=cfg.temperature,
                                           chunk_size=chunk))
    raw_score = lap("score", score_phase(reward_params, seq, smask, model_cfg=cfg.reward_model, chunk_size=chunk))
    if cfg.value_model is not None:
        values = lap("values", value_phase(value_params, seq, smask, model_cfg=cfg.value_model,
                                           num_response=num_response, chunk_size=chunk))
    batch, shaped, metrics, next_kl = lap("advantages", advantage_phase(
        raw_score, logp, ref_logp, values, rollout, kl_state, gain, bias, cfg=cfg))
    metrics = {**metrics, **times}
    return {"batch": batch, "rollout": rollout, "shaped": shaped, "metrics": metrics, "kl_state": next_kl,
            "raw_score_B": raw_score, "ref_logp_BxN": ref_logp}
