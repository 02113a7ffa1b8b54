"""Sample-N methods against PPO on the toy lab: proxy reward, gold reward and METEOR similarity vs √KL.

    python scripts/sample_n_study.py --out runs/sample_n_study
    python scripts/sample_n_study.py --render      # redraw docs/sample_n.{md,png} from <out>/results.json

From one SFT policy and one reward model (trained here with experiments/toylab_sft.py and toylab_rm.py
unless --sft/--rm are given): PPO, SuperHF, RLOO and GRPO (each its experiments/toylab_<method>.py) and
best-of-n for n = 1 … 64. Every method samples at the same temperature (--temperature, top-p 1), so all
curves start at the same policy distribution. The curves are the held-out evaluations of each run (the
same prompts and sampling keys at every eval); best-of-n sits at its analytic KL. A finished run (its
summary.json exists) is reused, not rerun. Writes docs/sample_n.md and docs/sample_n.png.
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
# method -> (iterations, eval_every): long enough for each to go well past the gold peak
RUNS = {"ppo": (150, 15), "superhf": (60, 6), "rloo": (80, 8), "grpo": (80, 8)}
STYLE = {"ppo": "C0", "superhf": "C1", "rloo": "C2", "grpo": "C3", "bon": "k"}


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "sample_n_study"))
    p.add_argument("--sft", default="", help="SFT model dir (default: train one into <out>/sft)")
    p.add_argument("--rm", default="", help="reward model dir (default: train one into <out>/rm)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of every method")
    p.add_argument("--eval_limit", type=int, default=256, help="held-out prompts per eval")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every run's iterations (e.g. 0.1 to try)")
    p.add_argument("--render", action="store_true", help="only rewrite the doc and plot from results.json")
    p.add_argument("--doc_dir", default=os.path.join(ROOT, "docs"))
    return p.parse_args(argv)


def _eval_curve(rows) -> list[dict]:
    keys = {"eval/kl/seq_mean": "kl", "eval/reward/proxy": "proxy", "eval/reward/gold": "gold",
            "eval/meteor_similarity": "meteor", "eval/distinct_2": "distinct_2", "eval/response/length": "length"}
    return [{"step": r["step"], **{v: r[k] for k, v in keys.items() if k in r}} for r in rows if "eval/reward/gold" in r]


def main(argv=None) -> int:
    args = _args(argv)
    out = _study.start(args, _render)
    if out is None:
        return 0
    from rlhfjax import parallel
    from rlhfjax.config import load_config
    from rlhfjax.recipes import bon, grpo, ppo, rloo, rm, sft, superhf
    from rlhfjax.train.metrics import read_jsonl

    exp = os.path.join(ROOT, "experiments")
    lab = f"--config.data.toylab_dir={os.path.join(out, 'data')}"
    mesh = parallel.single_device_mesh()
    stages = _study.Stages()

    sft_dir, rm_dir = args.sft, args.rm
    if not sft_dir:
        sft_dir, run_dir = os.path.join(out, "sft", "model"), os.path.join(out, "sft")
        stages.run("sft", run_dir, lambda: sft.run(load_config(os.path.join(exp, "toylab_sft.py"), [lab]), run_dir))
    if not rm_dir:
        rm_dir, run_dir = os.path.join(out, "rm", "model"), os.path.join(out, "rm")
        stages.run("rm", run_dir, lambda: rm.run(load_config(os.path.join(exp, "toylab_rm.py"), [
            lab, f"--config.model.init_from={sft_dir}"]), run_dir))
    common = [lab, f"--config.policy.init_from={sft_dir}", f"--config.reward.init_from={rm_dir}",
              f"--config.rollout.temperature={args.temperature}", "--config.rollout.top_p=1.0",
              f"--config.data.eval_limit={args.eval_limit}", "--config.train.save_every=0"]
    recipes = {"ppo": ppo, "superhf": superhf, "rloo": rloo, "grpo": grpo}
    results = {"methods": {}, "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
               "machine": _study.machine(), "args": vars(args), "runs": {}}
    for method, (iterations, every) in RUNS.items():
        iterations, every = max(2, round(iterations * args.scale)), max(1, round(every * args.scale))
        workdir = os.path.join(out, method)
        cfg = load_config(os.path.join(exp, f"toylab_{method}.py"), [
            *common, f"--config.train.iterations={iterations}", f"--config.train.eval_every={every}"])
        stages.run(method, workdir, lambda: recipes[method].run(cfg, workdir, mesh))
        rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        train = [r for r in rows if "reward/proxy" in r]
        last = train[-max(1, len(train) // 10):]  # the training reward at the end: last 10% of iterations
        results["methods"][method] = {
            "evals": _eval_curve(rows), "iterations": iterations,
            "train_proxy_end": sum(r["reward/proxy"] for r in last) / len(last),
            "train_gold_end": sum(r["reward/gold"] for r in last) / len(last)}
        results["runs"][method] = cfg.to_dict()
    bon_dir = os.path.join(out, "bon")
    stages.run("bon", bon_dir, lambda: bon.run(load_config(os.path.join(exp, "toylab_bon.py"), [
        *common, f"--config.bon.num_prompts={args.eval_limit}"]), bon_dir, mesh))
    with open(os.path.join(bon_dir, "summary.json")) as f:
        results["bon"] = json.load(f)["table"]
    stages.record(results, out)
    _study.save_results(out, results)
    _render(results, args.doc_dir)
    print(_table(results), flush=True)
    return 0


def _render(results, doc_dir: str) -> None:
    _plot(results, os.path.join(doc_dir, "sample_n.png"))
    _write_doc(results, os.path.join(doc_dir, "sample_n.md"))


def _plot(results, path: str) -> None:
    plt = _study.pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for method, r in results["methods"].items():
        ev = r["evals"]
        x = [_sqrt(e["kl"]) for e in ev]
        for ax, key in zip(axes, ("proxy", "gold", "meteor")):
            ax.plot(x, [e[key] for e in ev], "o-", color=STYLE[method], label=method, ms=3)
    bon_rows = results["bon"]
    x = [r["kl/sqrt"] for r in bon_rows]
    for ax, key in zip(axes, ("reward/proxy", "reward/gold", "chosen/meteor_similarity")):
        ax.plot(x, [r[key] for r in bon_rows], "s--", color=STYLE["bon"], label="best-of-n", ms=4)
    for ax, title in zip(axes, ("proxy reward (RM, normalised)", "gold reward (toy lab)",
                                "METEOR similarity (reward hacking ↑)")):
        ax.set_xlabel("√KL(π ‖ π_SFT)  (nats^½)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(results) -> str:
    lines = ["| method | iterations | √KL end | proxy end | gold start | gold end | gold max (at √KL) | METEOR start → end | "
             "train proxy end |", "|---|---|---|---|---|---|---|---|---|"]
    for method, r in results["methods"].items():
        ev = r["evals"]
        if not ev:
            lines.append(f"| {method} | {r['iterations']} | no held-out evals (fewer prompts than a batch) |")
            continue
        first, last = ev[0], ev[-1]
        peak = max(ev, key=lambda e: e["gold"])
        lines.append(f"| {method} | {r['iterations']} | {_sqrt(last['kl']):.2f} | {last['proxy']:+.3f} | "
                     f"{first['gold']:+.3f} | {last['gold']:+.3f} | {peak['gold']:+.3f} ({_sqrt(peak['kl']):.2f}) | "
                     f"{first['meteor']:.3f} → {last['meteor']:.3f} | {r['train_proxy_end']:+.3f} |")
    rows = results["bon"]
    peak = max(rows, key=lambda r: r["reward/gold"])
    lines.append(f"| best-of-n | n ≤ {int(rows[-1]['bon/n'])} | {rows[-1]['kl/sqrt']:.2f} | "
                 f"{rows[-1]['reward/proxy']:+.3f} | {rows[0]['reward/gold']:+.3f} | {rows[-1]['reward/gold']:+.3f} | "
                 f"{peak['reward/gold']:+.3f} ({peak['kl/sqrt']:.2f}, n = {int(peak['bon/n'])}) | "
                 f"{rows[0]['chosen/meteor_similarity']:.3f} → {rows[-1]['chosen/meteor_similarity']:.3f} | – |")
    return "\n".join(lines)


def _bon_table(results) -> str:
    lines = ["| n | KL analytic | KL plug-in | proxy | gold | METEOR |", "|---|---|---|---|---|---|"]
    for r in results["bon"]:
        lines.append(f"| {int(r['bon/n'])} | {r['kl/analytic']:.3f} | {r['kl/plugin']:.3f} | {r['reward/proxy']:+.3f} | "
                     f"{r['reward/gold']:+.3f} | {r['chosen/meteor_similarity']:.3f} |")
    return "\n".join(lines)


def _write_doc(results, path: str) -> None:
    t = results["timings_s"]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) or "every run reused"
    args = results["args"]
    head = f"""# Sample-N methods vs PPO on the toy lab: reward and reward hacking vs √KL

Generated by `scripts/sample_n_study.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}; float32. Total wall time {results["total_s"]:.0f} s ({timing}).

Setup: toy lab seed 0. One SFT policy (`experiments/toylab_sft.py`) and one reward model
(`experiments/toylab_rm.py`, from the SFT model) for every method. PPO, SuperHF, RLOO and GRPO run their
`experiments/toylab_<method>.py` defaults except: sampling temperature {args["temperature"]} and top-p 1 for all
(SuperHF's own default is T = 1, top-p 0.95), {args["eval_limit"]} held-out prompts per eval (fewer after
dropping duplicate prompts and a last partial batch). Every eval samples the same prompts with the same keys. KL is
Σ_t log π_T − log π_SFT,T on the eval samples; METEOR similarity is the mean pairwise METEOR between completions
to different prompts (64 of them; exact + stem matching, no WordNet data here). Best-of-n: a pool of 256
samples per prompt from the SFT policy, the best by the RM of disjoint groups of n, at the analytic KL
log n − (n−1)/n. "train proxy end" is the mean RM score of the training samples over the last 10% of
iterations (the paper's "training reward"); the other columns are held-out.

{_table(results)}

![proxy, gold and METEOR similarity vs √KL](sample_n.png)

Best-of-n (held-out prompts; plug-in KL on each prompt's pool of 256, repeated completions merged):

{_bon_table(results)}
"""
    _study.write_doc(path, head)


if __name__ == "__main__":
    sys.exit(main())
