"""Best-of-n: how far choosing the reward model's best of n samples moves from the policy.

`analytic_kl(n) = log n − (n−1)/n` is KL(π_bon ‖ π) when no two completions tie (Stiennon et al.
2020; Gao et al. 2022 put best-of-n on the √KL axis with it). It is an upper bound: with repeated
completions (a peaked policy, a small discrete space) the true KL is smaller (Beirami et al. 2024).

`bon_distribution(p, reward, n)` is the exact best-of-n law of a categorical distribution: with the
reward levels sorted and F their CDF, the best of n draws lands on level l with probability
F_l^n − F_{l−1}^n, shared among that level's outcomes in proportion to p (random tie-breaking).
`exact_kl` is its KL to p. `plugin_kl` applies both to a finite pool of M samples of one prompt:
its distinct completions with their empirical frequencies stand in for π. That estimate sees the
repeats the analytic value ignores; it is biased low when the pool is small (a pool of M distinct
samples caps it at log M), so pools should be several times n.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import numpy as np

from rlhfjax.analysis.kl_scaling import bon_kl as analytic_kl  # noqa: F401 (log n − (n−1)/n, re-exported)


def bon_distribution(p: np.ndarray, reward: np.ndarray, n: int) -> np.ndarray:
    """Probability that each outcome is the best of n i.i.d. draws from `p` (same order as `p`),
    ties in reward broken uniformly at random."""
    p = np.asarray(p, np.float64)
    levels, level_of = np.unique(np.asarray(reward, np.float64), return_inverse=True)
    p_level = np.bincount(level_of, weights=p, minlength=len(levels))
    cdf = np.clip(np.cumsum(p_level), 0.0, 1.0)
    q_level = cdf ** n - np.concatenate([[0.0], cdf[:-1]]) ** n
    share = np.divide(p, p_level[level_of], out=np.zeros_like(p), where=p_level[level_of] > 0)
    return q_level[level_of] * share


def exact_kl(p: np.ndarray, reward: np.ndarray, n: int) -> float:
    """KL(best-of-n of p ‖ p) of a categorical `p` (outcomes with p = 0 are never drawn)."""
    p = np.asarray(p, np.float64)
    q = bon_distribution(p, reward, n)
    live = q > 0
    return float(np.sum(q[live] * np.log(q[live] / p[live])))


def plugin_kl(completions: Sequence[Hashable], scores: Sequence[float], n: int) -> float:
    """`exact_kl` on one prompt's pool of sampled completions (identical completions merged: their
    empirical frequency is their probability; an identical completion has an identical score)."""
    counts = Counter(completions)
    score_of = dict(zip(completions, scores))
    keys = list(counts)
    p = np.array([counts[k] for k in keys], np.float64) / len(completions)
    return exact_kl(p, np.array([score_of[k] for k in keys]), n)


def best_in_groups(scores_PxM: np.ndarray, n: int) -> np.ndarray:
    """Index (into the pool) of the best of each disjoint group of n consecutive samples, for every
    prompt: (P, M // n). Ties go to the earlier sample. Every group is an independent best-of-n draw."""
    P, M = scores_PxM.shape
    g = M // n
    if g < 1:
        raise ValueError(f"pool of {M} samples is smaller than n={n}")
    groups = scores_PxM[:, :g * n].reshape(P, g, n)
    return np.arange(g)[None, :] * n + groups.argmax(-1)
