"""Iterated online RLHF vs one offline round at the same label and RL budget (Bai et al. 2022, §4.5).

    python scripts/online_study.py --out runs/online_study
    python scripts/online_study.py --render      # redraw docs/online.{md,png} from <out>/results.json

From one SFT policy (experiments/toylab_sft.py, trained here unless --sft is given), two arms of
`rlhfjax iterate` (experiments/toylab_iterate.py, PPO with a fixed β) per seed:
- offline: one round: --budget comparisons sampled from the SFT policy, one PM, --iterations of PPO;
- online: --rounds rounds of budget/rounds comparisons from the current policy, the PM fine-tuned on all
  comparisons so far each round, iterations/rounds of PPO from the current policy each round.
Both arms see the same labels per comparison budget, the same number of PPO iterations, the same
held-out prompts and sampling keys at every eval, and the KL anchor π_SFT. Reported: gold reward vs
√KL(π ‖ π_SFT), and how well each arm's last PM ranks held-out pairs sampled from its own final policy
(accuracy against the simulated annotators, agreement with the gold reward). Every run is an ordinary
`iterate` run directory under --out; finished rounds are reused. Writes docs/online.md and docs/online.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import _study  # noqa: E402 (scripts/ is on sys.path when a script runs)

_sqrt = _study.sqrt_kl

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARMS = ("offline", "online")
STYLE = {"offline": "C0", "online": "C3"}


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "online_study"))
    p.add_argument("--sft", default="", help="SFT model dir (default: train one into <out>/sft)")
    p.add_argument("--budget", type=int, default=2000, help="labelled comparisons per arm")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the online arm")
    p.add_argument("--iterations", type=int, default=160, help="PPO iterations per arm (split over rounds)")
    p.add_argument("--eval_every", type=int, default=20, help="PPO eval period (divides iterations/rounds)")
    p.add_argument("--seeds", default="0,1", help="run seeds (pairs, labels, PM and PPO); the toy lab is seed 0")
    p.add_argument("--render", action="store_true", help="only rewrite the doc and plot from results.json")
    p.add_argument("--doc_dir", default=os.path.join(ROOT, "docs"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _args(argv)
    if not args.render and (args.budget % args.rounds or args.iterations % args.rounds):
        raise SystemExit("--budget and --iterations must be divisible by --rounds")
    out = _study.start(args, _render)
    if out is None:
        return 0
    from rlhfjax import parallel
    from rlhfjax.config import load_config
    from rlhfjax.recipes import iterate, sft
    from rlhfjax.train.metrics import read_jsonl

    exp = os.path.join(ROOT, "experiments")
    lab = f"--config.data.toylab_dir={os.path.join(out, 'data')}"
    mesh = parallel.single_device_mesh()
    stages = _study.Stages()
    sft_dir = args.sft
    if not sft_dir:
        sft_dir, run_dir = os.path.join(out, "sft", "model"), os.path.join(out, "sft")
        stages.run("sft", run_dir, lambda: sft.run(load_config(os.path.join(exp, "toylab_sft.py"), [lab]), run_dir))
    results = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
               "machine": _study.machine(), "args": vars(args), "runs": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in ARMS:
            rounds = 1 if arm == "offline" else args.rounds
            workdir = os.path.join(out, f"{arm}_seed{seed}")
            cfg = load_config(os.path.join(exp, "toylab_iterate.py"), [
                lab, f"--config.policy.init_from={sft_dir}", f"--config.seed={seed}",
                f"--config.iterate.rounds={rounds}", f"--config.iterate.comparisons={args.budget // rounds}",
                f"--config.methods.ppo.train.iterations={args.iterations // rounds}",
                f"--config.methods.ppo.train.eval_every={args.eval_every}",
                "--config.methods.ppo.train.save_every=0"])
            stages.run(f"{arm} seed {seed}", workdir, lambda: iterate.run(cfg, workdir, mesh))
            with open(os.path.join(workdir, "summary.json")) as f:
                summary = json.load(f)
            results["runs"][f"{arm}_seed{seed}"] = {
                "arm": arm, "seed": seed, "records": summary["records"], "final": summary["final"],
                "labels": summary["labels"], "curve": read_jsonl(os.path.join(workdir, "curve.jsonl")),
                "pair_gold": [_pair_gold(os.path.join(workdir, f"round_{r}", "comparisons.jsonl"))
                              for r in range(rounds)]
                + [_pair_gold(os.path.join(workdir, "final", "eval_comparisons.jsonl"))]}
    stages.record(results, out)
    _study.save_results(out, results)
    _render(results, args.doc_dir)
    print(_table(results), flush=True)
    return 0


def _pair_gold(path: str) -> dict:
    """How much the gold reward separates a file's comparisons: mean |Δgold| and the share gold ties."""
    import numpy as np

    from rlhfjax.data.hh import load_hh
    from rlhfjax.data.toylab import gold_margins

    pairs, _ = load_hh(path, split="train")
    diff = np.abs(gold_margins(pairs))
    return {"abs_dgold": float(diff.mean()), "gold_ties": float(np.mean(diff == 0)), "pairs": len(pairs)}


def _render(results, doc_dir: str) -> None:
    _plot(results, os.path.join(doc_dir, "online.png"))
    _write_doc(results, os.path.join(doc_dir, "online.md"))


def _plot(results, path: str) -> None:
    plt = _study.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    seen = set()
    for run in results["runs"].values():
        arm, curve = run["arm"], run["curve"]
        label = arm if arm not in seen else None
        seen.add(arm)
        axes[0].plot([_sqrt(c["eval/kl/seq_mean"]) for c in curve], [c["eval/reward/gold"] for c in curve], "o-",
                     ms=3, color=STYLE[arm], alpha=0.8, label=label)
        if arm == "online":  # PM accuracy on the latest policy's held-out pairs, round by round
            recs = run["records"]
            axes[1].plot([r["round"] for r in recs], [r["pm/gold_agreement"] for r in recs], "o-", color=STYLE[arm],
                         label="online PM_r on π_r's pairs" if run["seed"] == _first_seed(results) else None)
            prev = [r for r in recs if "pm/prev_gold_agreement" in r]
            axes[1].plot([r["round"] for r in prev], [r["pm/prev_gold_agreement"] for r in prev], "x--",
                         color="C1", label="online PM_{r−1} on π_r's pairs" if run["seed"] == _first_seed(results)
                         else None)
        last = run["final"]["pm"][-1]
        x = results["args"]["rounds"] - 1 + (0.15 if arm == "online" else 0.3)
        axes[1].plot([x], [last["gold_agreement"]], "s", color=STYLE[arm], ms=7,
                     label=f"{arm}: last PM on its final policy's pairs" if run["seed"] == _first_seed(results)
                     else None)
    axes[0].set_xlabel("√KL(π ‖ π_SFT)  (nats^½)")
    axes[0].set_title("gold reward (toy lab)")
    axes[1].set_xlabel("round")
    axes[1].set_title("PM agreement with gold on held-out pairs")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _first_seed(results) -> int:
    return min(run["seed"] for run in results["runs"].values())


def _row(run) -> dict:
    curve = run["curve"]
    peak = max(curve, key=lambda c: c["eval/reward/gold"])
    last_pm = run["final"]["pm"][-1]
    return {"gold_start": curve[0]["eval/reward/gold"], "gold_end": curve[-1]["eval/reward/gold"],
            "sqrt_kl_end": _sqrt(curve[-1]["eval/kl/seq_mean"]), "gold_peak": peak["eval/reward/gold"],
            "sqrt_kl_peak": _sqrt(peak["eval/kl/seq_mean"]), "pm_acc": last_pm["accuracy"],
            "pm_gold": last_pm["gold_agreement"]}


def _fmt(col: str, v: float) -> str:
    return f"{v:.2f}" if "kl" in col else f"{v:.3f}" if col.startswith("pm") else f"{v:+.3f}"


def _mean_se(values):
    import numpy as np

    v = np.asarray(values, float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{v.mean():+.3f} ± {se:.3f}" if len(v) > 1 else f"{v.mean():+.3f}"


def _table(results) -> str:
    cols = ("gold_start", "gold_end", "sqrt_kl_end", "gold_peak", "sqrt_kl_peak", "pm_acc", "pm_gold")
    lines = ["| arm | seed | labels | gold start | gold end | √KL end | gold peak | √KL at peak | "
             "last PM: accuracy | last PM: gold agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    by_arm = {arm: [] for arm in ARMS}
    for run in results["runs"].values():
        row = _row(run)
        by_arm[run["arm"]].append(row)
        lines.append(f"| {run['arm']} | {run['seed']} | {run['labels']} | "
                     + " | ".join(_fmt(c, row[c]) for c in cols) + " |")
    for arm, rows in by_arm.items():
        if len(rows) > 1:
            lines.append(f"| **{arm}, mean ± s.e.** | {len(rows)} seeds | | "
                         + " | ".join(_mean_se([r[c] for r in rows]) for c in cols) + " |")
    return "\n".join(lines)


def _round_table(results) -> str:
    lines = ["| seed | round | labels so far | PM_r accuracy | PM_r gold agr. | PM_{r−1} accuracy | "
             "PM_{r−1} gold agr. | gold at round end | √KL at round end |", "|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"].values():
        if run["arm"] != "online":
            continue
        for r in run["records"]:
            prev = (f"{r['pm/prev_accuracy']:.3f} | {r['pm/prev_gold_agreement']:.3f}" if "pm/prev_accuracy" in r
                    else "– | –")
            lines.append(f"| {run['seed']} | {r['round']} | {r['labels/total']} | {r['pm/accuracy']:.3f} | "
                         f"{r['pm/gold_agreement']:.3f} | {prev} | {r['eval/reward/gold']:+.3f} | "
                         f"{r['eval/kl/sqrt']:.2f} |")
    return "\n".join(lines)


def _pair_table(results) -> str:
    lines = ["| arm | seed | " + " | ".join(f"round {r}" for r in range(results["args"]["rounds"]))
             + " | final policy (held-out) |", "|---|---|" + "---|" * (results["args"]["rounds"] + 1)]
    for run in results["runs"].values():
        cells = [f"{g['abs_dgold']:.3f} ({g['gold_ties']:.0%})" for g in run["pair_gold"]]
        cells = cells[:-1] + ["–"] * (results["args"]["rounds"] + 1 - len(cells)) + cells[-1:]
        lines.append(f"| {run['arm']} | {run['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_doc(results, path: str) -> None:
    t = results["timings_s"]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) or "every run reused"
    a = results["args"]
    head = f"""# Iterated online RLHF vs one offline round on the toy lab

Generated by `scripts/online_study.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}; float32. Total wall time {results["total_s"]:.0f} s ({timing}).

Setup (Bai et al. 2022, §4.5): `rlhfjax iterate` with `experiments/toylab_iterate.py` (PPO, fixed β = 0.05,
the PM fine-tuned from the previous round's on all comparisons so far, 2 epochs per round), from one SFT
policy. **Offline**: one round of {a["budget"]} comparisons sampled from the SFT policy, then {a["iterations"]}
PPO iterations. **Online**: {a["rounds"]} rounds of {a["budget"] // a["rounds"]} comparisons from the current
policy and {a["iterations"] // a["rounds"]} PPO iterations each. Same label budget, same PPO iterations, same
held-out prompts and sampling keys at every eval; KL is measured against the SFT policy throughout.
Labels come from the toy lab's `mixed` annotator pool (Bradley–Terry on gold with noise and length /
politeness biases). "Last PM" is each arm's final PM scored on 200 (`iterate.eval_comparisons`)
held-out pairs sampled from that arm's *final* policy and labelled the same way.

{_table(results)}

![gold reward vs √KL; PM accuracy by round](online.png)

Online rounds: PM_r is scored on held-out pairs from π_r (the policy it is about to be optimised
against); PM_{{r−1}} on the same pairs shows how stale the previous round's PM had become.

{_round_table(results)}

How far apart the two responses of a comparison are in gold reward (mean |Δgold|, and the share of pairs
gold ties), per round's training comparisons and for the held-out pairs from the final policy:

{_pair_table(results)}
"""
    _study.write_doc(path, head)


if __name__ == "__main__":
    sys.exit(main())
