"""Reward as a function of d = sqrt(KL(π‖π_init)): the functional forms of Gao et al. (2022).

- best-of-n: R(d) = d (α − β d)
- RL:        R(d) = d (α − β log d)   (defined for d > 0; not meant for d near 0)

Bai et al. (2022, §4.3) observe the PM score growing roughly linearly in d for much of training;
a proxy that keeps rising while the gold fit turns over is the signature of overoptimization.
Both fits are linear least squares in (α, β), so they are exact and deterministic.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np


@dataclasses.dataclass(frozen=True)
class ScalingFit:
    form: str  # "bon" | "rl"
    alpha: float
    beta: float
    r2: float

    def __call__(self, d):
        d = np.asarray(d, np.float64)
        if self.form == "bon":
            return d * (self.alpha - self.beta * d)
        return d * (self.alpha - self.beta * np.log(np.maximum(d, 1e-12)))

    @property
    def peak_d(self) -> float:
        """d at which the fitted gold reward is highest (inf if it never turns over)."""
        if self.beta <= 0:
            return float("inf")
        return self.alpha / (2 * self.beta) if self.form == "bon" else float(np.exp(self.alpha / self.beta - 1))


def fit_scaling(d, reward, form: str = "rl") -> ScalingFit:
    """Least-squares (α, β) of R(d) with R(0) = 0 built in (rewards relative to the initial policy)."""
    d = np.asarray(d, np.float64)
    r = np.asarray(reward, np.float64)
    keep = np.isfinite(d) & np.isfinite(r) & (d > 0)
    d, r = d[keep], r[keep]
    if d.size < 2:
        raise ValueError("need at least two points with d > 0 to fit")
    if form == "bon":
        X = np.stack([d, -d * d], 1)
    elif form == "rl":
        X = np.stack([d, -d * np.log(d)], 1)
    else:
        raise ValueError(f"form must be 'bon' or 'rl', got {form!r}")
    (alpha, beta), *_ = np.linalg.lstsq(X, r, rcond=None)
    resid = r - X @ np.array([alpha, beta])
    total = np.sum((r - r.mean()) ** 2)
    r2 = 1.0 - float(np.sum(resid ** 2) / total) if total > 0 else 1.0
    return ScalingFit(form, float(alpha), float(beta), r2)


def bon_kl(n) -> np.ndarray:
    """KL of best-of-n sampling from the base policy: log n − (n − 1)/n (an upper bound)."""
    n = np.asarray(n, np.float64)
    return np.log(n) - (n - 1) / n


def read_curve(metrics_path: str, keys=("kl/seq_mean", "reward/proxy", "reward/gold")) -> dict[str, np.ndarray]:
    """Columns of a run's metrics.jsonl, keeping the records that have every key."""
    rows = []
    with open(metrics_path) as f:
        for line in f:
            rec = json.loads(line)
            if all(k in rec for k in keys):
                rows.append([rec["step"]] + [rec[k] for k in keys])
    arr = np.asarray(rows, np.float64).reshape(-1, 1 + len(keys))
    return {"step": arr[:, 0], **{k: arr[:, i + 1] for i, k in enumerate(keys)}}


def plot_reward_vs_sqrt_kl(curve: dict[str, np.ndarray], path: str, title: str = "reward vs √KL",
                           baseline: dict[str, float] | None = None) -> str:
    """Proxy and gold reward (minus the initial policy's, if `baseline` given) against d = √KL,
    each with its RL-form fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.sqrt(np.maximum(curve["kl/seq_mean"], 0.0))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, color in (("reward/proxy", "C0"), ("reward/gold", "C3")):
        if key not in curve:
            continue
        r = curve[key] - (baseline or {}).get(key, 0.0)
        ax.plot(d, r, "o", ms=3, color=color, alpha=0.7, label=key)
        if np.sum(d > 0) >= 2:
            fit = fit_scaling(d, r, "rl")
            grid = np.linspace(max(d[d > 0].min(), 1e-3), d.max(), 100)
            ax.plot(grid, fit(grid), "-", color=color, lw=1,
                    label=f"fit d(α−β log d): α={fit.alpha:.2f}, β={fit.beta:.2f}")
    ax.set(xlabel="d = √KL(π‖π_init)  (nats^½)", ylabel="reward − initial" if baseline else "reward",
           title=title)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
