"""One screen on what scripts/demo.sh measured: `python scripts/demo_summary.py RUN_DIR [WALL_SECONDS]`.

Reads the sft, rm and ppo run directories under RUN_DIR (their summary.json) and prints each stage's
headline numbers, PPO's held-out gold and proxy reward against √KL with Gao et al.'s RL-form fit of the
gold curve, and whether the run overoptimized (gold past its peak while proxy kept rising).
"""

from __future__ import annotations

import json
import math
import os
import sys

from rlhfjax.analysis.kl_scaling import fit_scaling


def _load(run: str, stage: str) -> dict:
    with open(os.path.join(run, stage, "summary.json")) as f:
        return json.load(f)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def summary(run: str, wall: float | None = None) -> str:
    sft, rm, ppo = (_load(run, s) for s in ("sft", "rm", "ppo"))
    ev = [e for e in ppo["evals"] if "eval/reward/gold" in e]
    d = [math.sqrt(max(e["eval/kl/seq_mean"], 0.0)) for e in ev]
    gold = [e["eval/reward/gold"] for e in ev]
    proxy = [e["eval/reward/proxy"] for e in ev]
    peak = max(range(len(gold)), key=gold.__getitem__)
    lines = [f"== what the demo measured ({run}" + (f", {_minutes(wall)}" if wall else "") + ")",
             f"SFT  {sft['steps']} steps, {sft.get('seconds', 0):.0f} s: held-out NLL "
             f"{sft['final']['eval/nll']:.3f}, gold reward of its samples "
             f"{sft['final'].get('reward/gold', float('nan')):+.3f}",
             f"RM   {rm['steps']} steps, {rm['seconds']:.0f} s: held-out accuracy {rm['final']['eval/accuracy']:.3f} "
             f"vs annotators, {rm['final'].get('eval/gold_agreement', float('nan')):.3f} agreement with gold, "
             f"ECE {rm['final']['eval/ece']:.3f}",
             f"PPO  {ppo['iterations']} iterations, {ppo['seconds']:.0f} s; held-out evals (proxy: RM score, N(0, 1) "
             "under the SFT policy; gold: the toy lab's true reward):",
             f"     {'√KL':>6} {'proxy':>8} {'gold':>8}"]
    pick = sorted({0, peak, len(ev) - 1, *range(0, len(ev), max(1, len(ev) // 6))})
    for i in pick:
        mark = "  <- gold peak" if i == peak else ""
        lines.append(f"     {d[i]:>6.2f} {proxy[i]:>+8.3f} {gold[i]:>+8.3f}{mark}")
    try:
        fit = fit_scaling(d, [g - gold[0] for g in gold], "rl")
        lines.append(f"     gold − gold(SFT) ≈ d (α − β log d), d = √KL: α {fit.alpha:.3f}, "
                     f"β {fit.beta:.3f}, "
                     f"R² {fit.r2:.2f}, fitted peak at √KL {fit.peak_d:.2f} (Gao et al. 2022)")
    except ValueError as e:
        lines.append(f"     no fit: {e}")
    if peak < len(ev) - 1:
        lines.append(f"     overoptimization: gold peaked at √KL {d[peak]:.2f} and fell {gold[peak] - gold[-1]:.3f} "
                     f"by √KL {d[-1]:.2f}, while proxy went {proxy[peak]:+.3f} → {proxy[-1]:+.3f}")
    else:
        lines.append("     gold still rising at the last eval: no overoptimization within this run")
    plots = (os.path.join(run, "ppo", "reward_vs_sqrt_kl.png"), os.path.join(run, "rm", "calibration.png"))
    lines.append(f"plots: {plots[0]}, {plots[1]}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else None))
