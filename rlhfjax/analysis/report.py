"""Print and plot what an RLHF run did to reward as KL grew: `python -m rlhfjax.analysis.report RUN_DIR`.

RUN_DIR is a `ppo` run directory (its metrics.jsonl needs `kl/seq_mean` and `reward/proxy`; gold is
reported beside proxy where `reward/gold` is logged, as on the toy lab, and proxy alone elsewhere, e.g. HH).
Writes `reward_vs_sqrt_kl.png` there and prints a table of about `rows` evenly spaced iterations, rewards
shown relative to the first iteration (≈ the initial policy). A missing run directory or metrics.jsonl,
or one without those records, ends with one line `rlhfjax: error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from rlhfjax.analysis.kl_scaling import fit_scaling, plot_reward_vs_sqrt_kl, read_curve
from rlhfjax.errors import BadInputError, MissingPathError, UserError


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


def load_curve(run_dir: str) -> dict[str, np.ndarray]:
    """The run's training records with kl/seq_mean and reward/proxy (+ reward/gold where every record
    has it); no rows when there are none."""
    if not os.path.isdir(run_dir):
        raise MissingPathError(f"no run directory {run_dir!r}", "pass the --workdir of a ppo run")
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise MissingPathError(f"{run_dir!r} has no metrics.jsonl", "pass the --workdir of a ppo run")
    curve = read_curve(path)
    if len(curve["step"]) == 0:  # read_curve keeps only records with every key; no gold outside the toy lab
        curve = read_curve(path, keys=("kl/seq_mean", "reward/proxy"))
    return curve


def plot(run_dir: str, curve: dict[str, np.ndarray]) -> str:
    """`reward_vs_sqrt_kl.png` in `run_dir`: rewards relative to the first iteration against √KL."""
    baseline = {k: float(curve[k][0]) for k in ("reward/proxy", "reward/gold") if k in curve}
    return plot_reward_vs_sqrt_kl(curve, os.path.join(run_dir, "reward_vs_sqrt_kl.png"), baseline=baseline)


def plot_run(run_dir: str, min_points: int = 2) -> tuple[str | None, str]:
    """(plot path, "") for a finished online run, or (None, why not) when there is nothing to plot:
    the end of a run calls this, and too short a run must not fail there."""
    curve = load_curve(run_dir)
    n = len(curve["step"])
    if n < min_points:
        return None, (f"{n} logged iteration(s) with kl/seq_mean and reward/proxy, need {min_points} "
                      f"(a longer run or a smaller train.log_every gives one)")
    return plot(run_dir, curve), ""


def report(run_dir: str, rows: int = 10) -> str:
    curve = load_curve(run_dir)
    if len(curve["step"]) == 0:
        raise BadInputError(f"{os.path.join(run_dir, 'metrics.jsonl')} has no records with kl/seq_mean and "
                            "reward/proxy", "pass the --workdir of a ppo run")
    baseline = {k: float(curve[k][0]) for k in ("reward/proxy", "reward/gold") if k in curve}
    out = [table(curve, rows)]
    d = np.sqrt(np.maximum(curve["kl/seq_mean"], 0))
    for key in ("reward/proxy", "reward/gold"):
        if key in curve and np.sum(d > 0) >= 3:
            fit = fit_scaling(d, curve[key] - baseline[key], "rl")
            out.append(f"{key}: Δreward ≈ d(α − β log d), α={fit.alpha:.3f} β={fit.beta:.3f} "
                       f"(R²={fit.r2:.2f}; fitted peak at √KL={fit.peak_d:.2f})")
    out.append(f"plot: {plot(run_dir, curve)}")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--rows", type=int, default=10)
    args = p.parse_args(argv)
    try:
        print(report(args.run_dir, args.rows))
    except UserError as e:  # as the rlhfjax CLI: one line and status 2, no traceback
        print(f"rlhfjax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
