"""REINFORCE++ (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models", arXiv
2501.03262, "REINFORCE++ Enhancements": token-level KL penalty, PPO-clip, mini-batch updates, advantage
normalisation): REINFORCE with PPO's stabilisers and no critic. For each sampled response (tokens t with mask 1,
t_last the last of them):

    r_t = −β · KL_t + 1[t = t_last] · r(x, y),      KL_t = log π_old(y_t | ·) − log π_ref(y_t | ·)      (k1)
    G_t = Σ_{s ≥ t} r_s                                                                               (γ = 1)
    A_t = (G_t − mean G) / std G      over every valid token of the iteration's WHOLE batch, before minibatching

and the loss is PPO's clipped surrogate with A_t at token t (`objectives.group_pg.loss_fn` with `advantages_BxN`),
over several minibatches and epochs. Normalising over the global batch rather than per prompt (GRPO) is the
paper's point: the baseline is the batch's mean return, and its scale is estimated from many prompts, not a few
samples of one. The std is the biased one (ddof 0), with 1e-8 under the root, as OpenRLHF's replay buffer
(`normalize`) and `objectives.core.whiten`.
"""

from __future__ import annotations

import jax.numpy as jnp

from rlhfjax.objectives.core import as_bool, f32, kl_per_token, whiten


def token_rewards(score_B, kl_BxN, mask_BxN, kl_coef: float):
    """r_t = −β·KL_t on every response token, plus the score on its last one → (B, N), 0 where masked (a row
    without tokens, a padding row, gets no reward at all)."""
    m = as_bool(mask_BxN)
    pos_N = jnp.arange(m.shape[-1])
    last_B = jnp.max(jnp.where(m, pos_N, -1), axis=-1)
    end = pos_N[None, :] == last_B[:, None]
    return jnp.where(m, -kl_coef * f32(kl_BxN) + jnp.where(end, f32(score_B)[:, None], 0.0), 0.0)


def returns(rewards_BxN, mask_BxN):
    """G_t = Σ_{s ≥ t} r_s (undiscounted reward-to-go) → (B, N), 0 where masked."""
    m = as_bool(mask_BxN)
    r = jnp.where(m, f32(rewards_BxN), 0.0)
    return jnp.where(m, jnp.cumsum(r[:, ::-1], axis=-1)[:, ::-1], 0.0)


def advantages(score_B, logp_BxN, ref_logp_BxN, mask_BxN, kl_coef: float):
    """(globally normalised A_BxN, returns G_BxN) of a whole batch (module docstring)."""
    kl = kl_per_token(logp_BxN, ref_logp_BxN, "k1")
    g = returns(token_rewards(score_B, kl, mask_BxN, kl_coef), mask_BxN)
    return whiten(g, mask_BxN), g
