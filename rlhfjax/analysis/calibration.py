"""Calibration of preference predictions: reliability bins, expected calibration error, plot.

A PM predicts P(A preferred over B) = σ(r_A − r_B). Bai et al. (2022, §3.3) plot the predicted
probability against the observed frequency; since a comparison's outcome is 1 by construction
when A is the chosen response, `pairwise_predictions` lists every comparison in both orders
(p with outcome 1, 1 − p with outcome 0), which makes the diagram symmetric about 0.5 and
uses the full [0, 1] range.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Reliability:
    edges: np.ndarray  # (n_bins + 1,) bin edges on [0, 1]
    confidence: np.ndarray  # mean predicted probability per bin (nan where empty)
    frequency: np.ndarray  # observed frequency of outcome 1 per bin (nan where empty)
    counts: np.ndarray  # predictions per bin
    ece: float  # Σ_b (n_b / N) |frequency_b − confidence_b|


def reliability(probs, outcomes, n_bins: int = 10) -> Reliability:
    """Equal-width reliability bins of predicted probabilities vs binary outcomes."""
    p = np.asarray(probs, np.float64).ravel()
    y = np.asarray(outcomes, np.float64).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"need equal, non-empty probs and outcomes, got {p.shape} and {y.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=p, minlength=n_bins) / counts
        frequency = np.bincount(which, weights=y, minlength=n_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / p.size * np.abs(frequency[filled] - confidence[filled])))
    return Reliability(edges, confidence, frequency, counts, ece)


def pairwise_predictions(margin_chosen_minus_rejected) -> tuple[np.ndarray, np.ndarray]:
    """(probs, outcomes) listing each comparison in both orders; see the module docstring."""
    m = np.asarray(margin_chosen_minus_rejected, np.float64).ravel()
    p = 1.0 / (1.0 + np.exp(-m))
    return np.concatenate([p, 1.0 - p]), np.concatenate([np.ones_like(p), np.zeros_like(p)])


def plot_reliability(rel: Reliability, path: str, title: str = "PM calibration") -> str:
    """Reliability diagram (PNG): observed frequency vs predicted probability, with bin counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    filled = rel.counts > 0
    ax.plot(rel.confidence[filled], rel.frequency[filled], "o-", label=f"model (ECE {rel.ece:.3f})")
    for c, f, n in zip(rel.confidence[filled], rel.frequency[filled], rel.counts[filled]):
        ax.annotate(f"{int(n)}", (c, f), textcoords="offset points", xytext=(4, -10), fontsize=7, color="0.4")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(preferred)", ylabel="observed frequency",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pair_metrics(margin: np.ndarray, gold_margin: np.ndarray | None = None) -> dict:
    """accuracy (a margin of 0 counts half) and, given gold margins, agreement with gold's preference on
    the pairs gold does not tie."""
    out = {"accuracy": float(np.mean((margin > 0) + 0.5 * (margin == 0)))}
    if gold_margin is not None:
        decided = gold_margin != 0
        m = margin[decided]
        out["gold_agreement"] = float(np.mean((np.sign(m) == np.sign(gold_margin[decided])) + 0.5 * (m == 0)))
    return out
