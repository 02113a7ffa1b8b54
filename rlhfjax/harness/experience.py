"""Experience phases of online methods, each one `jax.jit`, timed one by one by `Phases`.

    sample_phase   rlhfjax.sampling.sample(policy), N completions per prompt → Rollout
    logp_phase     teacher-forced log π_T of the response tokens   → logp_BxN
    logp_value_phase  the same forward + a value head on the policy  → (logp_BxN, values_BxN)
    value_phase    a separate value model's V(prefix)               → values_BxN
    score_phase    reward-model score at the last real token        → score_B

Alignment: the prompt occupies slots [0, P) (left-padded), response token j sits at slot P + j and
N = L − P. `logp_BxN[:, j]` is log π_T(token_j | prefix) from the logits at slot P + j − 1, and
`values_BxN[:, j]` is V(prefix) read at the same slot (the state in which token j was chosen), as
in lm-human-preferences. Log-probs are of the *temperature-scaled* policy (logits / T), the
distribution the rollout samples from, so KL estimates on rollout tokens are unbiased.

Log-probs are recomputed by teacher forcing (not taken from the sampler) with
`models.api.policy_forward`, the function every loss also calls, so the first minibatch's
ratio is 1 bit for bit. That needs the same XLA computation on both sides: the teacher-forced
phases run in chunks of `chunk_size` rows (`lax.map`; PPO: its minibatch), because the matmul
kernels' summation order depends on the batch dimension. Chunking also bounds activation memory.
Frozen models (reference, reward) are arguments, never closed over.

A prompt context (`prompt.context_file`, `data.batching`) is what the *policy* sees: it samples, and its
log-probs are taken, on context + prompt. The reward model scores the response after the plain prompt
(`judged_sequence`): it judges the answer to the request, not the context, and its normaliser is fitted
the same way. Held-out evals measure KL from the reference on the plain prompt too (harness.evaluation), so
a prompted policy sits at its true distance from the unprompted one; inside RL training the KL penalty
anchors to the reference given the same context as the policy (its own starting point).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from rlhfjax.models import ModelConfig, api
from rlhfjax.sampling import Rollout, SamplingConfig, sample

sample_phase = sample
PROMPT_KEYS = ("prompt_tokens_BxP", "prompt_mask_BxP", "plain_prompt_tokens_BxP", "plain_prompt_mask_BxP",
               "response_tokens_BxN", "response_mask_BxN")


def prompt_arrays(batch: dict) -> dict:
    """The token arrays of a prompt batch (`data.batching.collate_prompts`): the policy's prompts and,
    with a context, the plain ones (and a dataset's responses: `collate_prompt_response`)."""
    return {k: batch[k] for k in PROMPT_KEYS if k in batch}


def judged_sequence(ro: Rollout, plain_prompt_BxP=None, plain_mask_BxP=None, num_samples: int = 1):
    """(sequence_BxL, mask_BxL) a judge of the response sees: the plain prompt (repeated `num_samples`
    times per row, like the sampler's) + the response when given, else the rollout's own sequence."""
    if plain_prompt_BxP is None:
        return ro.sequence_BxL, ro.sequence_mask_BxL
    prompt = jnp.repeat(plain_prompt_BxP, num_samples, axis=0).astype(jnp.int32)
    mask = jnp.repeat(plain_mask_BxP, num_samples, axis=0).astype(ro.response_mask_BxN.dtype)
    return (jnp.concatenate([prompt, ro.tokens_BxN.astype(jnp.int32)], axis=1),
            jnp.concatenate([mask, ro.response_mask_BxN], axis=1))


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


def _logp(params, seq, mask, *, model_cfg, num_response, temperature):
    return api.policy_forward(params, None, seq, mask, model_cfg=model_cfg, num_response=num_response,
                          temperature=temperature)["logp_BxN"]


def _logp_values(params, seq, mask, *, model_cfg, num_response, temperature):
    """`params = (policy, value head)`: one forward gives both."""
    out = api.policy_forward(params[0], params[1], seq, mask, model_cfg=model_cfg, num_response=num_response,
                         temperature=temperature)
    return out["logp_BxN"], out["values_BxN"]


def _values(params, seq, mask, *, model_cfg, num_response):
    return api.values(params, model_cfg, seq, mask, start=seq.shape[1] - num_response)


def _scores(params, seq, mask, *, model_cfg):
    return api.scores(params, model_cfg, seq, mask)


logp_phase = _phase(_logp, "model_cfg", "num_response", "temperature")
logp_value_phase = _phase(_logp_values, "model_cfg", "num_response", "temperature")
value_phase = _phase(_values, "model_cfg", "num_response")
score_phase = _phase(_scores, "model_cfg")


class Phases:
    """Runs phases and records `time/<name>` for each (blocking on its output when `timed`)."""

    def __init__(self, timed: bool = True):
        self.timed, self.times, self._t = timed, {}, time.perf_counter()

    def __call__(self, name: str, out):
        if self.timed:
            jax.block_until_ready(out)
            now = time.perf_counter()
            self.times[f"time/{name}"] = now - self._t
            self._t = now
        return out


def sample_and_score(policy_params, reward_params, prompt_BxP, prompt_mask_BxP, rng, *, policy_cfg: ModelConfig,
                     reward_cfg: ModelConfig, sampling: SamplingConfig, num_samples: int = 1,
                     chunk_size: int | None = None, phases: Phases | None = None, plain_prompt_BxP=None,
                     plain_mask_BxP=None) -> tuple[Rollout, jax.Array]:
    """N completions per prompt from the policy, scored by the reward model → (Rollout, raw score_B·N).
    Rows [i·N, (i+1)·N) belong to prompt i. With `plain_prompt_BxP` (the prompts without the policy's
    context) the reward model scores plain prompt + response (`judged_sequence`)."""
    phases = phases or Phases(timed=False)
    ro = phases("generate", sample_phase(policy_params, prompt_BxP, prompt_mask_BxP, rng, model_cfg=policy_cfg,
                                         cfg=sampling, num_samples=num_samples))
    seq, smask = judged_sequence(ro, plain_prompt_BxP, plain_mask_BxP, num_samples)
    score = phases("score", score_phase(reward_params, seq, smask, model_cfg=reward_cfg, chunk_size=chunk_size))
    return ro, score


def plain_prompts(prompts: dict) -> dict:
    """`sample_and_score`'s plain-prompt arguments from a prompt batch (empty without a context)."""
    if "plain_prompt_tokens_BxP" not in prompts:
        return {}
    return {"plain_prompt_BxP": prompts["plain_prompt_tokens_BxP"], "plain_mask_BxP": prompts["plain_prompt_mask_BxP"]}
