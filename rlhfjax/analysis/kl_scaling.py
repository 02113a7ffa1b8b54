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


# --------------------------------------------------------------------------------------------
# Sweeps: many runs of several methods on one reward vs √KL plane (scripts/kl_scaling.py)

CURVE_COLUMNS = ("method", "value", "step", "sqrt_kl", "kl", "proxy", "gold")


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """y ≈ intercept + slope·x by least squares over the `n` points kept; r2 is the usual 1 − SS_res/SS_tot."""

    slope: float
    intercept: float
    r2: float
    n: int


def linear_fit(x, y, x_max: float | None = None) -> LinearFit:
    """Ordinary least squares of y on x over the finite points with x ≤ x_max (all if None). Fewer than
    two distinct x values give NaNs (nothing to fit), not an error: a sweep's early range may be empty."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if x_max is not None:
        keep &= x <= x_max
    x, y = x[keep], y[keep]
    if np.unique(x).size < 2:
        return LinearFit(float("nan"), float("nan"), float("nan"), int(x.size))
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(resid ** 2) / total) if total > 0 else 1.0
    return LinearFit(float(slope), float(intercept), r2, int(x.size))


def eval_curve(metrics_path: str, prefix: str = "eval/") -> list[dict]:
    """The records of a run's metrics.jsonl that have `<prefix>kl/seq_mean` and `<prefix>reward/gold`
    (online and DPO runs log their held-out evals as eval/...; best-of-n logs one record per n without the
    prefix, step = n), as {step, kl, sqrt_kl, proxy, gold}; proxy is NaN where no RM was given. A step
    logged twice (a resumed run re-evaluating) keeps its last record."""
    by_step = {}
    with open(metrics_path) as f:
        for line in f:
            rec = json.loads(line)
            if f"{prefix}kl/seq_mean" in rec and f"{prefix}reward/gold" in rec:
                kl = float(rec[f"{prefix}kl/seq_mean"])
                by_step[int(rec["step"])] = {
                    "step": int(rec["step"]), "kl": kl, "sqrt_kl": float(np.sqrt(max(kl, 0.0))),
                    "proxy": float(rec.get(f"{prefix}reward/proxy", float("nan"))),
                    "gold": float(rec[f"{prefix}reward/gold"])}
    return [by_step[s] for s in sorted(by_step)]


def relative_to_start(rows: list[dict], keys=("proxy", "gold")) -> list[dict]:
    """Rows of ONE run with `d<key>` = key − the first row's key (the initial policy: step 0, or n = 1 for
    best-of-n), so that R(0) = 0 as the Gao et al. forms assume; `start` marks that first row."""
    if not rows:
        return []
    first = rows[0]
    return [{**r, **{f"d{k}": r[k] - first[k] for k in keys}, "start": i == 0} for i, r in enumerate(rows)]


def summarise_method(rows: list[dict], form: str, early_sqrt_kl: float = 0.0) -> dict:
    """One method's points (every run of it, already `relative_to_start`), pooled:
    - `gold_fit`: Gao et al.'s form ("rl" or "bon") fitted to Δgold vs √KL (points with √KL > 0);
    - `early`: the range √KL ≤ `early_sqrt_kl`, or, when that is 0, √KL ≤ half the largest √KL seen;
      `proxy_early`: the linear fit of Δproxy on √KL over it (Bai et al. §4.3: roughly linear), and
      `proxy_all` the same over every point (a lower R² there says the proxy bends later);
    - `gold_peak`: the observed point with the highest gold reward (its √KL, gold, run value, step).
    The runs' starts (the same initial policy, evaluated alike) count once."""
    starts = [r for r in rows if r.get("start")]
    rows = starts[:1] + [r for r in rows if not r.get("start")]
    d = np.array([r["sqrt_kl"] for r in rows], np.float64)
    dgold = np.array([r["dgold"] for r in rows], np.float64)
    dproxy = np.array([r["dproxy"] for r in rows], np.float64)
    early = float(early_sqrt_kl) if early_sqrt_kl > 0 else (0.5 * float(np.max(d)) if d.size else float("nan"))
    try:
        fit = fit_scaling(d, dgold, form)
        gold_fit = {"alpha": fit.alpha, "beta": fit.beta, "r2": fit.r2, "peak_sqrt_kl": fit.peak_d}
    except ValueError:  # fewer than two points with √KL > 0
        gold_fit = {k: float("nan") for k in ("alpha", "beta", "r2", "peak_sqrt_kl")}
    lin = linear_fit(d, dproxy, early)
    peak = max(rows, key=lambda r: r["gold"]) if rows else None
    return {"form": form, "points": len(rows), "max_sqrt_kl": float(np.max(d)) if d.size else float("nan"),
            "gold_fit": gold_fit, "early_sqrt_kl": early,
            "proxy_early": dataclasses.asdict(lin), "proxy_all": dataclasses.asdict(linear_fit(d, dproxy)),
            "gold_peak": ({"sqrt_kl": peak["sqrt_kl"], "gold": peak["gold"], "dgold": peak["dgold"],
                           "value": peak.get("value"), "step": peak["step"]} if peak else None)}


def summary_table(summaries: dict[str, dict]) -> str:
    """Markdown table of `summarise_method` results, one row per method."""
    lines = ["| method | points | Gao et al. form | α | β | R² | fitted peak √KL | early range √KL ≤ | "
             "proxy slope (early) | R² (early, n) | proxy slope, R² (all) | observed gold peak √KL (Δgold, run) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, s in summaries.items():
        g, p, pk, a = s["gold_fit"], s["proxy_early"], s["gold_peak"], s["proxy_all"]
        form = "d(α − βd)" if s["form"] == "bon" else "d(α − β log d)"
        peak = "–"
        if pk:
            value = pk["value"] if isinstance(pk["value"], str) else f"{pk['value']:g}"  # a run may be named
            run = f"n = {value}" if s["form"] == "bon" else f"{value} at step {pk['step']}"
            peak = f"{pk['sqrt_kl']:.2f} ({pk['dgold']:+.3f}; {run})"
        lines.append(f"| {method} | {s['points']} | {form} | {g['alpha']:.3f} | {g['beta']:.3f} | {g['r2']:.2f} | "
                     f"{g['peak_sqrt_kl']:.2f} | {s['early_sqrt_kl']:.2f} | {p['slope']:+.3f} | "
                     f"{p['r2']:.2f} ({p['n']}) | {a['slope']:+.3f}, {a['r2']:.2f} | {peak} |")
    return "\n".join(lines)
