"""Out-of-distribution detection on model activations (Bai et al. 2022, §5.4).

Fit a Gaussian (mean, shared covariance) to activations of in-distribution prompts, then score
new prompts by Mahalanobis distance. The "simplified relative" score subtracts the distance under
the diagonal of the same covariance, (x−μ)ᵀΣ⁻¹(x−μ) − (x−μ)ᵀΣ_diag⁻¹(x−μ), which removes the
part of the distance explained by per-dimension scale alone. Higher scores mean more OOD.

`prompt_activations` reads a chosen layer's output of any rlhfjax decoder (policy or PM backbone)
at each prompt's last token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D) inverse of the (shrunk) covariance
    diag_precision: np.ndarray  # (D,) 1 / diag(covariance)


def fit_gaussian(features_NxD, shrinkage: float = 1e-6) -> GaussianFit:
    """Mean and shared covariance; `shrinkage` × mean variance is added to the diagonal so the
    inverse exists even with fewer samples than dimensions."""
    x = np.asarray(features_NxD, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need an (N >= 2, D) feature matrix, got shape {x.shape}")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    cov += np.eye(cov.shape[0]) * shrinkage * max(np.trace(cov) / cov.shape[0], 1e-12)
    return GaussianFit(mean, np.linalg.inv(cov), 1.0 / np.diag(cov))


def mahalanobis(features_NxD, fit: GaussianFit) -> np.ndarray:
    """Squared Mahalanobis distance (x−μ)ᵀΣ⁻¹(x−μ) per row."""
    d = np.asarray(features_NxD, np.float64) - fit.mean
    return np.einsum("nd,de,ne->n", d, fit.precision, d)


def relative_mahalanobis(features_NxD, fit: GaussianFit) -> np.ndarray:
    """The simplified relative score: full-covariance minus diagonal-covariance distance."""
    d = np.asarray(features_NxD, np.float64) - fit.mean
    return mahalanobis(features_NxD, fit) - np.einsum("nd,d,nd->n", d, fit.diag_precision, d)


def auroc(scores_in, scores_out) -> float:
    """P(score of an OOD sample > score of an in-distribution sample), ties counting 1/2
    (the Mann–Whitney form of the area under the ROC curve)."""
    a = np.asarray(scores_in, np.float64).ravel()
    b = np.asarray(scores_out, np.float64).ravel()
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size)
    sorted_vals = both[order]
    # average ranks over ties
    i = 0
    while i < both.size:
        j = i
        while j + 1 < both.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum_out = ranks[a.size:].sum()
    return float((rank_sum_out - b.size * (b.size + 1) / 2.0) / (a.size * b.size))


def prompt_activations(apply_fn, params, tokens_BxT, mask_BxT, layer: int) -> jax.Array:
    """Output of decoder block `layer` at each row's last real token: (B, E) fp32.

    `apply_fn` is a Linen `apply` of a `Transformer` (or a `ScalarModel`, whose backbone is
    searched) taking `(variables, tokens, positions, mask, mutable=...)`.
    """
    from rlhfjax.models import last_token_index, positions_from_mask

    positions = positions_from_mask(mask_BxT)
    _, state = apply_fn({"params": params}, tokens_BxT, positions, mask_BxT, mutable=["intermediates"])
    inter = state["intermediates"]
    inter = inter.get("backbone", inter)
    acts = inter[f"layer_{layer}"][0].astype(jnp.float32)  # sow stores a tuple
    idx = last_token_index(mask_BxT)
    return jnp.take_along_axis(acts, idx[:, None, None], axis=1)[:, 0]
