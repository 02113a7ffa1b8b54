"""DPO at several β against PPO on the toy lab: gold and proxy reward vs √KL from the same SFT policy
and the same comparison data.

    python scripts/dpo_study.py --out runs/dpo_study --base runs/sample_n_study
    python scripts/dpo_study.py --render      # redraw docs/dpo.{md,png} from <out>/results.json

`--base` is a `scripts/sample_n_study.py` output directory: its toy lab, SFT policy, reward model (trained on
the `mixed` annotator pool's comparisons, the pairs DPO trains on here) and PPO run are reused; without it
they are trained here (the same configs). DPO runs `experiments/toylab_dpo.py` for each β, with the RM given
for the proxy reward and held-out sampling evals at PPO's temperature (0.7) on the same test prompts. A
finished run (its summary.json exists) is reused. Writes docs/dpo.md and docs/dpo.png.
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
BETAS = (0.03, 0.1, 0.3, 1.0)


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "dpo_study"))
    p.add_argument("--base", default=os.path.join(ROOT, "runs", "sample_n_study"),
                   help="a sample_n_study output dir to reuse (data, sft, rm, ppo); missing parts are trained here")
    p.add_argument("--betas", default=",".join(map(str, BETAS)))
    p.add_argument("--eval_limit", type=int, default=256, help="held-out prompts per sampling eval")
    p.add_argument("--steps", type=int, default=250, help="DPO optimizer steps (batch 64)")
    p.add_argument("--ppo_iterations", type=int, default=150, help="only when the base has no PPO run")
    p.add_argument("--render", action="store_true", help="only rewrite the doc and plot from results.json")
    p.add_argument("--doc_dir", default=os.path.join(ROOT, "docs"))
    return p.parse_args(argv)


def _curve(rows) -> list[dict]:
    keys = {"eval/kl/seq_mean": "kl", "eval/reward/proxy": "proxy", "eval/reward/gold": "gold",
            "eval/meteor_similarity": "meteor", "eval/dpo/accuracy": "accuracy", "eval/dpo/margin": "margin",
            "eval/dpo/logp_drift_chosen": "drift_chosen", "eval/dpo/logp_drift_rejected": "drift_rejected"}
    return [{"step": r["step"], **{v: r[k] for k, v in keys.items() if k in r}} for r in rows
            if "eval/reward/gold" in r or "eval/dpo/accuracy" in r]


def main(argv=None) -> int:
    args = _args(argv)
    out, base = _study.start(args, _render), os.path.abspath(args.base)
    if out is None:
        return 0
    from rlhfjax import parallel
    from rlhfjax.config import load_config
    from rlhfjax.recipes import dpo, ppo, rm, sft
    from rlhfjax.train.metrics import read_jsonl

    exp = os.path.join(ROOT, "experiments")
    lab = f"--config.data.toylab_dir={os.path.join(base, 'data')}"
    mesh = parallel.single_device_mesh()
    stages = _study.Stages()

    sft_dir, rm_dir, ppo_dir = (os.path.join(base, d) for d in ("sft", "rm", "ppo"))
    stages.run("sft", sft_dir, lambda: sft.run(load_config(os.path.join(exp, "toylab_sft.py"), [lab]), sft_dir))
    stages.run("rm", rm_dir, lambda: rm.run(load_config(os.path.join(exp, "toylab_rm.py"), [
        lab, f"--config.model.init_from={sft_dir}/model"]), rm_dir))
    stages.run("ppo", ppo_dir, lambda: ppo.run(load_config(os.path.join(exp, "toylab_ppo.py"), [
        lab, f"--config.policy.init_from={sft_dir}/model", f"--config.reward.init_from={rm_dir}/model",
        f"--config.train.iterations={args.ppo_iterations}", f"--config.train.eval_every={args.ppo_iterations // 10}",
        f"--config.data.eval_limit={args.eval_limit}", "--config.train.save_every=0"]), ppo_dir, mesh))
    results = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
               "machine": _study.machine(), "args": vars(args), "dpo": {}}
    with open(os.path.join(rm_dir, "summary.json")) as f:
        results["rm_final"] = json.load(f)["final"]
    results["ppo"] = _curve(read_jsonl(os.path.join(ppo_dir, "metrics.jsonl")))
    with open(os.path.join(ppo_dir, "config.json")) as f:
        results["ppo_config"] = {k: v for k, v in json.load(f).items() if k in ("train", "kl", "rollout")}
    for beta in (float(b) for b in args.betas.split(",")):
        workdir = os.path.join(out, f"dpo_beta{beta:g}")
        cfg = load_config(os.path.join(exp, "toylab_dpo.py"), [
            lab, f"--config.policy.init_from={sft_dir}/model", f"--config.reward.init_from={rm_dir}/model",
            f"--config.dpo.beta={beta}", f"--config.train.steps={args.steps}",
            f"--config.eval.prompt_limit={args.eval_limit}", "--config.train.save_every=0"])
        stages.run(f"dpo β={beta:g}", workdir, lambda: dpo.run(cfg, workdir, mesh))
        rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        results["dpo"][f"{beta:g}"] = {"evals": _curve(rows),
                                       "train_end": {k: v for k, v in rows[-1].items() if k.startswith("dpo/")}}
    stages.record(results, out)
    _study.save_results(out, results)
    _render(results, args.doc_dir)
    print(_table(results), flush=True)
    return 0


def _render(results, doc_dir: str) -> None:
    _plot(results, os.path.join(doc_dir, "dpo.png"))
    _write_doc(results, os.path.join(doc_dir, "dpo.md"))


def _sampled(curve):
    return [e for e in curve if "gold" in e and "kl" in e]


def _plot(results, path: str) -> None:
    plt = _study.pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ppo = _sampled(results["ppo"])
    for ax, key in zip(axes[:2], ("gold", "proxy")):
        ax.plot([_sqrt(e["kl"]) for e in ppo], [e[key] for e in ppo], "o-", color="k", ms=3, label="PPO")
    for i, (beta, r) in enumerate(results["dpo"].items()):
        ev = _sampled(r["evals"])
        for ax, key in zip(axes[:2], ("gold", "proxy")):
            ax.plot([_sqrt(e["kl"]) for e in ev], [e[key] for e in ev], "s-", color=f"C{i}", ms=3, label=f"DPO β={beta}")
        pairs = [e for e in r["evals"] if "drift_chosen" in e]
        axes[2].plot([e["step"] for e in pairs], [e["drift_chosen"] for e in pairs], "-", color=f"C{i}",
                     label=f"chosen, β={beta}")
        axes[2].plot([e["step"] for e in pairs], [e["drift_rejected"] for e in pairs], "--", color=f"C{i}")
    for ax, title in zip(axes, ("gold reward (toy lab), held-out", "proxy reward (RM), held-out",
                                "held-out log π − log π_ref (— chosen, -- rejected)")):
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("√KL(π ‖ π_SFT)")
    axes[1].set_xlabel("√KL(π ‖ π_SFT)")
    axes[2].set_xlabel("DPO step")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(results) -> str:
    lines = ["| run | √KL end | gold start | gold end | gold max (at √KL) | proxy end | held-out pair accuracy | "
             "chosen / rejected log-prob drift |", "|---|---|---|---|---|---|---|---|"]
    ppo = _sampled(results["ppo"])
    peak = max(ppo, key=lambda e: e["gold"])
    lines.append(f"| PPO | {_sqrt(ppo[-1]['kl']):.2f} | {ppo[0]['gold']:+.3f} | {ppo[-1]['gold']:+.3f} | "
                 f"{peak['gold']:+.3f} ({_sqrt(peak['kl']):.2f}) | {ppo[-1]['proxy']:+.3f} | – | – |")
    for beta, r in results["dpo"].items():
        ev = _sampled(r["evals"])
        peak = max(ev, key=lambda e: e["gold"])
        pairs = [e for e in r["evals"] if "accuracy" in e]
        last = pairs[-1]
        lines.append(f"| DPO β={beta} | {_sqrt(ev[-1]['kl']):.2f} | {ev[0]['gold']:+.3f} | {ev[-1]['gold']:+.3f} | "
                     f"{peak['gold']:+.3f} ({_sqrt(peak['kl']):.2f}) | {ev[-1].get('proxy', float('nan')):+.3f} | "
                     f"{pairs[0]['accuracy']:.3f} → {last['accuracy']:.3f} | "
                     f"{last['drift_chosen']:+.2f} / {last['drift_rejected']:+.2f} |")
    return "\n".join(lines)


def _write_doc(results, path: str) -> None:
    t = results["timings_s"]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) or "every run reused"
    args, rmf, pc = results["args"], results["rm_final"], results["ppo_config"]
    head = f"""# DPO vs PPO on the toy lab: gold reward vs √KL

Generated by `scripts/dpo_study.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}; float32. Total wall time {results["total_s"]:.0f} s ({timing}).

Setup: toy lab seed 0, the SFT policy, reward model and PPO run of `scripts/sample_n_study.py` (or trained here
with the same configs). Both methods learn from the same comparisons: the `mixed` annotator pool's train
pairs (the RM, held-out accuracy {rmf.get('eval/accuracy', float('nan')):.3f} vs annotators, PPO optimises
against; DPO trains on them directly). PPO: `experiments/toylab_ppo.py`, {pc['train']['iterations']} iterations
of {pc['train']['batch_size']} prompts, adaptive KL (target {pc['kl']['target']}). DPO: `experiments/toylab_dpo.py`,
{args['steps']} steps × 64 pairs for each β. Every curve is the runs' held-out sampling evals: {args['eval_limit']}
test prompts (fewer after dropping duplicates and a last partial batch), temperature 0.7, KL = Σ_t log π_T − log
π_SFT,T on the samples. Pair accuracy and log-prob drift are on the held-out `mixed` test pairs.

{_table(results)}

![gold and proxy reward vs √KL, log-prob drift](dpo.png)
"""
    _study.write_doc(path, head)


if __name__ == "__main__":
    sys.exit(main())
