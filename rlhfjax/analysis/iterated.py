"""What an `rlhfjax iterate` run did, on one axis: every round's RL evals joined into one curve
(iteration, round, gold / proxy reward, KL to the first policy) and its reward-vs-√KL plot."""

from __future__ import annotations

import os

import numpy as np

from rlhfjax.train.metrics import read_jsonl

EVAL_KEYS = ("eval/reward/gold", "eval/reward/proxy", "eval/kl/seq_mean")


def round_curve(workdir: str, rounds: int) -> list[dict]:
    """Every round's RL evals on one iteration axis (a round's step-0 eval repeats the previous end)."""
    rows, offset = [], 0
    for r in range(rounds):
        path = os.path.join(workdir, f"round_{r}", "rl", "metrics.jsonl")
        if not os.path.exists(path):
            break
        evals = [rec for rec in read_jsonl(path) if "eval/kl/seq_mean" in rec]
        for rec in evals:
            if r > 0 and rec["step"] == 0:
                continue
            rows.append({"iteration": offset + rec["step"], "round": r, **{k: rec[k] for k in EVAL_KEYS if k in rec}})
        offset += max((rec["step"] for rec in evals), default=0)
    return rows


def plot_curve(rows: list[dict], path: str, title: str) -> str | None:
    """Gold (and each round's proxy) reward vs √KL to π_0, rounds marked."""
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    d = np.sqrt(np.maximum([r["eval/kl/seq_mean"] for r in rows], 0.0))
    if all("eval/reward/gold" in r for r in rows):
        ax.plot(d, [r["eval/reward/gold"] for r in rows], "-o", color="C3", ms=3, label="gold")
    for rnd in sorted({r["round"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["round"] == rnd and "eval/reward/proxy" in r]
        ax.plot(d[idx], [rows[i]["eval/reward/proxy"] for i in idx], "--", color="C0", alpha=0.4 + 0.6 * (rnd + 1)
                / (rows[-1]["round"] + 1), label="proxy (each round's PM)" if rnd == 0 else None)
    ax.set_xlabel("√KL(π ‖ π_0)  [nats^½]")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
