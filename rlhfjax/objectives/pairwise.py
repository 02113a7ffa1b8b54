"""Pairwise (and ranked-list) preference losses (Askell et al. 2021; Bai et al. 2022) as pure functions.

Kept apart from `objectives/rm.py` so that every objective that learns from comparisons (the reward
model today, DPO-style objectives later) uses the same losses.
Per-comparison losses return one value per row; the RM `loss_fn` (in `objectives/rm.py`) sums
them with the batch's row mask and divides by the number of real rows, so padded rows of a last
partial batch never count.

- ranked (Bradley–Terry): −log σ(r_chosen − r_rejected) = softplus(r_rejected − r_chosen);
  for lists ranked best → worst, Plackett–Luce: −Σ_i [s_i − logsumexp_{j ≥ i} s_j].
- binary discrimination: each response classified good (chosen) or bad (rejected) on its own,
  sigmoid cross-entropy on its score.
- imitation: the LM loss on the preferred response; a response is scored by its mean token
  log-likelihood (the baseline Askell et al. compare ranked modelling against).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhfjax.models import api

NEG = -1e9  # finite: keeps logsumexp NaN-free when an entire tail is masked


def bradley_terry(r_chosen_B, r_rejected_B):
    """−log σ(r_chosen − r_rejected) per pair."""
    return jax.nn.softplus(r_rejected_B - r_chosen_B)


def plackett_luce(scores_BxK, rank_mask_BxK):
    """−log P(observed ranking) under Plackett–Luce, per list; items ranked best → worst.

    Masked slots (rank_mask 0, always at the end of a list) drop out of every denominator; the
    last real item's term is log 1 = 0. With K = 2 this is `bradley_terry`.
    """
    valid = rank_mask_BxK.astype(bool)
    s = jnp.where(valid, scores_BxK.astype(jnp.float32), NEG)
    # logsumexp over the suffix j >= i, computed by a reversed cumulative logaddexp.
    tail = jax.lax.cumlogsumexp(s[:, ::-1], axis=1)[:, ::-1]
    return jnp.sum(jnp.where(valid, tail - s, 0.0), axis=1)


def binary_discrimination(r_chosen_B, r_rejected_B):
    """Sigmoid cross-entropy with chosen labelled good (1) and rejected bad (0), summed per pair."""
    return jax.nn.softplus(-r_chosen_B) + jax.nn.softplus(r_rejected_B)


def pair_accuracy(r_chosen_B, r_rejected_B):
    """1 where chosen scores higher, 0.5 on ties, 0 otherwise."""
    return jnp.where(r_chosen_B > r_rejected_B, 1.0, jnp.where(r_chosen_B == r_rejected_B, 0.5, 0.0))


def pair_response_logps(params, batch, model_cfg):
    """Summed response log-probs of a `collate_pairs` batch in one 2B forward →
    (logp_chosen_B, logp_rejected_B, count_chosen_B, count_rejected_B)."""
    cat = lambda k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])  # noqa: E731
    s, c = api.response_logp(params, model_cfg, cat("tokens_BxT"), cat("mask_BxT"), cat("response_mask_BxT"))
    B = batch["chosen_tokens_BxT"].shape[0]
    return s[:B], s[B:], c[:B], c[B:]


def mean_pair_logps(params, batch, model_cfg, fill: float):
    """Length-normalised (mean token) response log-probs of a `collate_pairs` batch and `valid_B` (a real row whose
    responses both have tokens) → (mean_chosen_B, mean_rejected_B, valid_B); rows that do not count hold `fill`."""
    s_c, s_r, n_c, n_r = pair_response_logps(params, batch, model_cfg)
    valid_B = batch["row_mask_B"].astype(jnp.float32) * (n_c > 0) * (n_r > 0)
    mean = lambda s, n: jnp.where(valid_B > 0, s / jnp.maximum(n, 1.0), fill)  # noqa: E731
    return mean(s_c, n_c), mean(s_r, n_r), valid_B
