"""ReMax (Li et al. 2023, "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for Aligning
Large Language Models", arXiv 2310.10505, Algorithm 1): REINFORCE whose baseline is the reward of the policy's
own greedy response. Per prompt x, one response y ~ π_θ(·|x) is sampled and one ȳ decoded greedily (argmax at
every step); the gradient is

    Σ_x A(x, y) · ∇_θ Σ_t log π_θ(y_t | x, y_<t),     A(x, y) = R(x, y) − r(x, ȳ),
    R(x, y) = r(x, y) − β · Σ_t (log π(y_t | ·) − log π_ref(y_t | ·))        (k1, the sampled response only).

ȳ does not depend on y, so subtracting r(x, ȳ) leaves the gradient unbiased while removing much of its
prompt-to-prompt variance; a sample equal to ȳ gets advantage exactly 0 (at β = 0). β = 0 is Algorithm 1's
plain reward; the reference code (liziniu/ReMax, step3_rlhf_finetuning/remax_trainer.py) also penalises the sampled
response's KL to the reference (`--kl_ctl 0.05` in its run scripts), per token with γ = 0.99 and the reward
difference clipped to ±5. Here the penalty is the sequence-level KL of the sampled response, subtracted from its
reward (exact REINFORCE on E[r − β·KL]); the greedy baseline is the RM score alone, as in the reference code (ȳ is
not a sample of π, so its log-ratio estimates no KL).

The loss is `objectives.group_pg.loss_fn` with these advantages: one step on fresh samples, so its clipped ratio
is exactly 1 and the gradient is plain REINFORCE (`aggregation` "sequence_sum" = Algorithm 1's Σ_t per response).
"""

from __future__ import annotations

import jax.numpy as jnp

from rlhfjax.objectives.core import as_bool, f32


def advantages(score_B, greedy_score_B, kl_B, kl_coef: float = 0.0):
    """A = (r(x, y) − β·KL(y)) − r(x, ȳ) per prompt → (B,). `kl_B`: Σ_t k1 of each sampled response."""
    return f32(score_B) - kl_coef * f32(kl_B) - f32(greedy_score_B)


def same_response(tokens_BxN, mask_BxN, other_tokens_BxN, other_mask_BxN):
    """Rows whose two responses are the same tokens (the sample is the greedy response: its advantage is 0 at
    β = 0, and it teaches nothing) → bool (B,)."""
    m, o = as_bool(mask_BxN), as_bool(other_mask_BxN)
    return jnp.all((m == o) & (~m | (tokens_BxN == other_tokens_BxN)), axis=-1)
