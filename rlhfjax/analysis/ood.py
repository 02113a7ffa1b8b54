"""Out-of-distribution detection on model activations (Bai et al. 2022, §5.4).

Fit a Gaussian (mean, shared covariance) to activations of in-distribution prompts, then score
new prompts by Mahalanobis distance. The "simplified relative" score subtracts the distance under
the diagonal of the same covariance, (x−μ)ᵀΣ⁻¹(x−μ) − (x−μ)ᵀΣ_diag⁻¹(x−μ), which removes the
part of the distance explained by per-dimension scale alone. Higher scores mean more OOD.

`prompt_activations` reads a chosen layer's output of any rlhfjax decoder (policy or PM backbone)
at each prompt's last token through `models.api.activations`; `collect_activations` runs it over a
prompt list in fixed-shape jitted batches and `ood_report` fits on in-distribution features and
scores held-out vs OOD ones. The
`rlhfjax ood` recipe (rlhfjax/recipes/ood.py) wires these to any model directory.

Layer indices: `0 .. L-1` = output of decoder block i (the residual stream after it), `-1` = the
final-norm output (`DecoderOutput.hidden`, what scalar heads read).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax.models.config import ModelConfig


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


FINAL = -1  # layer index of the final-norm output (= models.api.FINAL_NORM)


def resolve_layers(spec, num_layers: int) -> tuple[int, ...]:
    """`"middle"` -> (L // 2,); `"all"` -> (0, …, L-1, -1); `"0,2,-1"` or an int -> those layers."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "middle":
            return (num_layers // 2,)
        if text == "all":
            return tuple(range(num_layers)) + (FINAL,)
        try:
            layers = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise ValueError(f"layer spec {spec!r}: use 'middle', 'all' or comma-separated ints") from None
    else:
        layers = tuple(int(x) for x in (spec if isinstance(spec, Sequence) else [spec]))
    if not layers:
        raise ValueError(f"layer spec {spec!r} names no layer")
    bad = [x for x in layers if not FINAL <= x < num_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has blocks 0..{num_layers - 1}; -1 is the "
                         "final-norm output")
    return tuple(dict.fromkeys(layers))  # dedupe, keep order


def prompt_activations_multi(params, cfg: ModelConfig, tokens_BxT, mask_BxT, layers: Sequence[int], *,
                             scalar_model: bool = False) -> dict[int, jax.Array]:
    """{layer: (B, E) fp32} read at each row's last real token (the final column when left-padded), from
    `api.activations` of an LM (`scalar_model=False`) or a reward/value `ScalarModel`'s params."""
    from rlhfjax.models import api, last_token_index

    idx = last_token_index(mask_BxT)
    outs = api.activations(params, cfg, tokens_BxT, mask_BxT, tuple(layers), scalar_model=scalar_model)
    return {i: jnp.take_along_axis(a, idx[:, None, None], axis=1)[:, 0] for i, a in outs.items()}


def prompt_activations(params, cfg: ModelConfig, tokens_BxT, mask_BxT, layer: int, *,
                       scalar_model: bool = False) -> jax.Array:
    """Output of decoder block `layer` (-1: final norm) at each row's last real token: (B, E) fp32."""
    return prompt_activations_multi(params, cfg, tokens_BxT, mask_BxT, (layer,), scalar_model=scalar_model)[layer]


def make_activation_fn(cfg: ModelConfig, layers: Sequence[int], *, scalar_model: bool = False) -> Callable:
    """Jitted `(params, tokens_BxT, mask_BxT) -> {layer: (B, E)}`."""
    layers = tuple(layers)
    return jax.jit(lambda params, tokens, mask: prompt_activations_multi(params, cfg, tokens, mask, layers,
                                                                        scalar_model=scalar_model))


def collect_activations(act_fn: Callable, params, prompts: Sequence, encoder, batch_size: int,
                        mesh=None) -> dict[int, np.ndarray]:
    """Run `act_fn` (from `make_activation_fn`) over prompts (`PromptExample`s or strings) in batches
    of exactly `batch_size` rows (the last one padded with empty rows, dropped again), collated by
    `rlhfjax.data.batching.collate_prompts` (left-padded). Given the params' `mesh`, each batch is
    sharded on it (call under `parallel.activate(mesh)`). Returns {layer: (N, E) float32 numpy}."""
    from rlhfjax import parallel
    from rlhfjax.data.batching import collate_prompts, padded_batches

    chunks: dict[int, list[np.ndarray]] = {}
    for _, rows, n in padded_batches(prompts, batch_size):
        batch = collate_prompts(rows, encoder)
        batch = {k: batch[k] for k in ("prompt_tokens_BxP", "prompt_mask_BxP")}
        if mesh is not None:
            batch = parallel.shard_batch(batch, mesh)
        acts = act_fn(params, batch["prompt_tokens_BxP"], batch["prompt_mask_BxP"])
        for layer, a in acts.items():
            chunks.setdefault(layer, []).append(parallel.host(a)[:n])
    return {layer: np.concatenate(c) for layer, c in chunks.items()}


SCORES = {"mahalanobis": mahalanobis, "relative_mahalanobis": relative_mahalanobis}


def ood_report(fit_NxD, in_MxD, ood_KxD, shrinkage: float = 1e-6) -> tuple[dict, dict]:
    """Fit on `fit_NxD` (in-distribution), score held-out in-distribution `in_MxD` and `ood_KxD`.

    Returns (metrics, scores): metrics[score_name] = {auroc, in_mean, ood_mean, in_median,
    ood_median}; scores[score_name] = (in_scores_M, ood_scores_K). Higher score = more OOD.
    """
    fit = fit_gaussian(fit_NxD, shrinkage=shrinkage)
    metrics, scores = {}, {}
    for name, fn in SCORES.items():
        s_in, s_out = fn(in_MxD, fit), fn(ood_KxD, fit)
        scores[name] = (s_in, s_out)
        metrics[name] = {"auroc": auroc(s_in, s_out), "in_mean": float(s_in.mean()),
                         "ood_mean": float(s_out.mean()), "in_median": float(np.median(s_in)),
                         "ood_median": float(np.median(s_out))}
    return metrics, scores


def plot_score_histograms(scores: dict, path: str, title: str = "OOD scores") -> str:
    """One panel per score: histograms of in-distribution vs OOD scores (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 3.6), squeeze=False)
    for ax, (name, (s_in, s_out)) in zip(axes[0], scores.items()):
        both = np.concatenate([s_in, s_out])
        lo, hi = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
        ax.hist(np.clip(s_in, lo, hi), bins=bins, alpha=0.6, density=True, label=f"in-distribution (n={s_in.size})")
        ax.hist(np.clip(s_out, lo, hi), bins=bins, alpha=0.6, density=True, label=f"OOD (n={s_out.size})")
        ax.set_title(f"{name}: AUROC {auroc(s_in, s_out):.3f}", fontsize=9)
        ax.set_xlabel("score (higher = more OOD)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
