"""Print and plot what an RLHF run did to reward as KL grew: `python -m rlhfjax.analysis.report RUN_DIR`.

RUN_DIR is a `ppo` run directory (its metrics.jsonl needs `kl/seq_mean` and `reward/proxy`; gold is
reported beside proxy where `reward/gold` is logged, as on the toy lab, and proxy alone elsewhere, e.g. HH).
Writes `reward_vs_sqrt_kl.png` there and prints a table of about `rows` evenly spaced iterations, rewards
shown relative to the first iteration (≈ the initial policy).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from rlhfjax.analysis.kl_scaling import fit_scaling, plot_reward_vs_sqrt_kl, read_curve


def table(curve: dict[str, np.ndarray], rows: int = 10) -> str:
    n = len(curve["step"])
    pick = sorted(set(np.linspace(0, n - 1, min(rows, n)).round().astype(int)))
    has_gold = "reward/gold" in curve
    head = f"{'iter':>6} {'KL':>8} {'√KL':>6} {'proxy':>8} {'Δproxy':>8}" + (
        f" {'gold':>8} {'Δgold':>8}" if has_gold else "")
    lines = [head, "-" * len(head)]
    for i in pick:
        kl = curve["kl/seq_mean"][i]
        line = (f"{int(curve['step'][i]):>6} {kl:>8.3f} {np.sqrt(max(kl, 0)):>6.3f} "
                f"{curve['reward/proxy'][i]:>8.3f} {curve['reward/proxy'][i] - curve['reward/proxy'][0]:>+8.3f}")
        if has_gold:
            line += f" {curve['reward/gold'][i]:>8.3f} {curve['reward/gold'][i] - curve['reward/gold'][0]:>+8.3f}"
        lines.append(line)
    return "\n".join(lines)


def report(run_dir: str, rows: int = 10) -> str:
    path = os.path.join(run_dir, "metrics.jsonl")
    curve = read_curve(path)
    if len(curve["step"]) == 0:  # read_curve keeps only records with every key; no gold outside the toy lab
        curve = read_curve(path, keys=("kl/seq_mean", "reward/proxy"))
    if len(curve["step"]) == 0:
        raise ValueError(f"{path} has no records with kl/seq_mean and reward/proxy")
    baseline = {k: float(curve[k][0]) for k in ("reward/proxy", "reward/gold") if k in curve}
    out = [table(curve, rows)]
    d = np.sqrt(np.maximum(curve["kl/seq_mean"], 0))
    for key in ("reward/proxy", "reward/gold"):
        if key in curve and np.sum(d > 0) >= 3:
            fit = fit_scaling(d, curve[key] - baseline[key], "rl")
            out.append(f"{key}: Δreward ≈ d(α − β log d), α={fit.alpha:.3f} β={fit.beta:.3f} "
                       f"(R²={fit.r2:.2f}; fitted peak at √KL={fit.peak_d:.2f})")
    png = plot_reward_vs_sqrt_kl(curve, os.path.join(run_dir, "reward_vs_sqrt_kl.png"), baseline=baseline)
    out.append(f"plot: {png}")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--rows", type=int, default=10)
    args = p.parse_args(argv)
    print(report(args.run_dir, args.rows))


if __name__ == "__main__":
    main()
