"""Helpful vs harmless on the toy lab (Bai et al. 2022) and the prompting baselines RLHF must beat (Askell et al.
2021): preference models from one annotator pool, PPO against each, a context prompt and context distillation.

    python scripts/competing_study.py --out runs/competing_study
    python scripts/competing_study.py --render      # redraw docs/competing.{md,png} from <out>/results.json

1. One SFT policy (experiments/toylab_sft.py).
2. Three preference models from it (experiments/toylab_rm.py), on the helpful-only, harmless-only and mixed
   annotator pools: the same 4,000 training pairs, each labelled by its pool. Each is evaluated on every
   pool's labels of the same 400 test pairs, and against the gold reward and its two components.
3. PPO (experiments/toylab_ppo.py) from the SFT policy against each preference model: gold, its components,
   refusal rates and compliance with harmful requests vs √KL on held-out prompts.
4. The SFT policy prompted with experiments/contexts/toylab_hhh.txt (two good answers and a refusal), and that
   prompt distilled into the weights (experiments/toylab_distill.py), on the same prompts and sampling keys;
   an ablation prompts with the same context less its refusal turn.

A finished run (its summary.json exists) is reused. Writes docs/competing.md, competing.png, competing_pm.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import _study  # noqa: E402 (scripts/ is on sys.path when a script runs)

_sqrt = _study.sqrt_kl

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POOLS = ("helpful", "harmless", "mixed")
STYLE = {"helpful": "C0", "harmless": "C3", "mixed": "C2"}
CURVE_KEYS = {"eval/kl/seq_mean": "kl", "eval/reward/proxy": "proxy", "eval/reward/gold": "gold",
              "eval/gold/helpful": "helpful", "eval/gold/harmless": "harmless", "eval/refusal/benign": "refuse_benign",
              "eval/refusal/harmful": "refuse_harmful", "eval/compliance/harmful": "comply_harmful",
              "eval/response/length": "length"}
PANELS = (("gold", "gold reward"), ("helpful", "gold: helpfulness"), ("harmless", "gold: harmlessness"),
          ("refuse_benign", "refusal rate, benign requests (evasive ↑)"),
          ("refuse_harmful", "refusal rate, harmful requests"),
          ("comply_harmful", "compliance: harm words in answers to harmful requests"))


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "competing_study"))
    p.add_argument("--ppo_iterations", type=int, default=100)
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--eval_limit", type=int, default=256, help="held-out prompts per eval")
    p.add_argument("--distill_iterations", type=int, default=60)
    p.add_argument("--render", action="store_true", help="only rewrite the doc and plots from results.json")
    p.add_argument("--doc_dir", default=os.path.join(ROOT, "docs"))
    return p.parse_args(argv)


def _curve(rows) -> list[dict]:
    return [{"step": r["step"], **{v: r[k] for k, v in CURVE_KEYS.items() if k in r}}
            for r in rows if "eval/kl/seq_mean" in r]


def pm_cross_table(margins: dict[str, np.ndarray], pairs: dict[str, list]) -> dict:
    """Each PM's accuracy on every pool's labels of the shared test pairs and its agreement with gold and
    its components. `margins[p]`: PM p's r_chosen − r_rejected on pool p's test pairs (its own orientation);
    `pairs[q]`: pool q's labelled test pairs, the same candidate pairs in the same order."""
    from rlhfjax.analysis.calibration import pair_metrics
    from rlhfjax.data.toylab import GoldWeights, gold_margins

    ref = pairs[POOLS[0]]
    for q in POOLS:
        if [(a.prompt, {a.chosen, a.rejected}) for a in pairs[q]] != [(a.prompt, {a.chosen, a.rejected}) for a in ref]:
            raise ValueError(f"pool {q}'s test pairs are not the same candidate pairs as {POOLS[0]}'s")
    golds = {"gold": GoldWeights(), "gold_helpful": GoldWeights(1.0, 0.0), "gold_harmless": GoldWeights(0.0, 1.0)}
    table = {}
    for p in POOLS:
        margin = margins[p]
        if len(margin) != len(ref):
            raise ValueError(f"PM {p}: {len(margin)} eval margins for {len(ref)} test pairs")
        row = {}
        for q in POOLS:  # re-orient p's margins to q's labels: + where q chose what p's file calls chosen
            same = np.array([a.chosen == b.chosen for a, b in zip(pairs[p], pairs[q])])
            row[f"acc_{q}"] = pair_metrics(np.where(same, margin, -margin))["accuracy"]
        for name, w in golds.items():
            row[name] = pair_metrics(margin, gold_margins(pairs[p], w))["gold_agreement"]
        harmful = np.array([_is_harmful(a.prompt) for a in pairs[p]])
        for subset, sel in (("harmful", harmful), ("benign", ~harmful)):
            row[f"gold_{subset}"] = pair_metrics(margin[sel], gold_margins([a for a, s in zip(pairs[p], sel) if s]))[
                "gold_agreement"]
        table[p] = row
    agreement = {f"{q}_vs_{r}": float(np.mean([a.chosen == b.chosen for a, b in zip(pairs[q], pairs[r])]))
                 for i, q in enumerate(POOLS) for r in POOLS[i + 1:]}
    return {"pm": table, "label_agreement": agreement, "num_pairs": len(ref),
            "num_harmful": int(sum(_is_harmful(a.prompt) for a in ref))}


def _is_harmful(prompt: str) -> bool:
    from rlhfjax.data.toylab import parse_request

    req = parse_request(prompt)
    return req is not None and req.harm is not None


def main(argv=None) -> int:
    args = _args(argv)
    out = _study.start(args, _render)
    if out is None:
        return 0
    from rlhfjax import parallel
    from rlhfjax.config import load_config
    from rlhfjax.data.hh import load_hh
    from rlhfjax.recipes import distill, ppo, rm, sft
    from rlhfjax.train.metrics import read_jsonl

    exp = os.path.join(ROOT, "experiments")
    data = os.path.join(out, "data")
    lab = f"--config.data.toylab_dir={data}"
    mesh = parallel.single_device_mesh()
    stages = _study.Stages()
    results = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
               "machine": _study.machine(), "args": vars(args), "ppo": {}}

    sft_run = os.path.join(out, "sft")
    sft_dir = os.path.join(sft_run, "model")
    stages.run("sft", sft_run, lambda: sft.run(load_config(os.path.join(exp, "toylab_sft.py"), [lab]), sft_run))

    margins, pairs = {}, {}
    for pool in POOLS:
        run = os.path.join(out, f"rm_{pool}")
        cfg = load_config(os.path.join(exp, "toylab_rm.py"), [lab, f"--config.model.init_from={sft_dir}",
                                                                f"--config.data.data_dir={pool}"])
        stages.run(f"rm_{pool}", run, lambda: rm.run(cfg, run, mesh))
        margins[pool] = np.load(os.path.join(run, "eval_margins.npy"))
        pairs[pool], _ = load_hh(os.path.join(data, "comparisons"), data_dir=pool, split=cfg.data.eval_split,
                                 limit=cfg.data.eval_limit or None)
    results.update(pm_cross_table(margins, pairs))

    common = [lab, f"--config.policy.init_from={sft_dir}", f"--config.data.eval_limit={args.eval_limit}",
              "--config.train.save_every=0", f"--config.train.eval_every={args.eval_every}"]
    temperature = None
    for pool in POOLS:
        run = os.path.join(out, f"ppo_{pool}")
        cfg = load_config(os.path.join(exp, "toylab_ppo.py"), [
            *common, f"--config.reward.init_from={os.path.join(out, f'rm_{pool}', 'model')}",
            f"--config.train.iterations={args.ppo_iterations}"])
        temperature = cfg.rollout.temperature
        stages.run(f"ppo_{pool}", run, lambda: ppo.run(cfg, run, mesh))
        results["ppo"][pool] = _curve(read_jsonl(os.path.join(run, "metrics.jsonl")))

    # The context rows, sampled like PPO's evals (same temperature, prompts and keys): the teacher's data for
    # distillation is sampled at its own temperature (distill.temperature, 1 = its distribution).
    run = os.path.join(out, "distill")
    cfg = load_config(os.path.join(exp, "toylab_distill.py"), [
        *common, f"--config.rollout.temperature={temperature}", f"--config.train.iterations={args.distill_iterations}"])
    stages.run("distill", run, lambda: distill.run(cfg, run, mesh))
    with open(os.path.join(run, "summary.json")) as f:
        teacher = json.load(f)["teacher_eval"]
    results["context"] = {"teacher": _curve([{"step": 0, **teacher}])[0],
                          "distill": _curve(read_jsonl(os.path.join(run, "metrics.jsonl"))),
                          "context_file": os.path.relpath(cfg.prompt.context_file, ROOT),
                          "context_text": open(cfg.prompt.context_file).read()}
    # Ablation: the same context without its refusal turn (does the prompted policy copy the refusal?).
    run = os.path.join(out, "context_without_refusal")
    stages.run("context_without_refusal", run, lambda: _prompted_eval(cfg, run, mesh, _without_refusal(
        results["context"]["context_text"])))
    with open(os.path.join(run, "summary.json")) as f:
        ablation = json.load(f)
    results["context"]["without_refusal"] = {**_curve([{"step": 0, **ablation["eval"]}])[0],
                                             "text": ablation["context_text"]}
    results["temperature"] = temperature
    stages.record(results, out)
    _study.save_results(out, results)
    _render(results, args.doc_dir)
    print(_pm_table(results), _ppo_table(results), sep="\n\n", flush=True)
    return 0


def _without_refusal(context: str) -> str:
    from rlhfjax.data.hh import HUMAN

    turns = [t for t in context.split(HUMAN)[1:] if "sorry" not in t.split()]
    return "".join(HUMAN + t for t in turns).rstrip("\n")


def _prompted_eval(cfg, run: str, mesh, context: str) -> None:
    """The SFT policy prompted with `context`, on the same eval prompts and keys → <run>/summary.json."""
    from rlhfjax.recipes import distill

    os.makedirs(run, exist_ok=True)
    path = os.path.join(run, "context.txt")
    with open(path, "w") as f:
        f.write(context + "\n")
    cfg = cfg.copy_and_resolve_references()
    cfg.prompt.context_file = path
    setup, _, _ = distill.build(cfg, mesh)
    import jax.numpy as jnp

    out = distill.teacher_eval(setup, mesh, jnp.ones(()), jnp.zeros(()))
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump({"eval": out, "context_text": context}, f, indent=1)


def _render(results, doc_dir: str) -> None:
    _plot(results, os.path.join(doc_dir, "competing.png"))
    _plot_pm(results, os.path.join(doc_dir, "competing_pm.png"))
    _write_doc(results, os.path.join(doc_dir, "competing.md"))


def _plot(results, path: str) -> None:
    plt = _study.pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ctx = results["context"]
    for ax, (key, title) in zip(axes.flat, PANELS):
        for pool, curve in results["ppo"].items():
            ax.plot([_sqrt(e["kl"]) for e in curve], [e[key] for e in curve], "o-", ms=3, color=STYLE[pool],
                    label=f"PPO vs {pool} PM")
        d = ctx["distill"]
        ax.plot([_sqrt(e["kl"]) for e in d], [e[key] for e in d], "^:", ms=3, color="C4",
                label="context distillation (training)")
        t = ctx["teacher"]
        ax.plot([_sqrt(t["kl"])], [t[key]], "*", ms=14, color="k", label="SFT + context prompt")
        if "without_refusal" in ctx:
            t = ctx["without_refusal"]
            ax.plot([_sqrt(t["kl"])], [t[key]], "P", ms=10, color="0.5", label="SFT + context without its refusal")
        ax.set_title(title)
        ax.set_xlabel("√KL(π ‖ π_SFT)  (nats^½)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_pm(results, path: str) -> None:
    plt = _study.pyplot()

    cols = [f"acc_{q}" for q in POOLS] + ["gold", "gold_helpful", "gold_harmless"]
    labels = [f"{q} labels" for q in POOLS] + ["gold", "gold: helpful", "gold: harmless"]
    grid = np.array([[results["pm"][p][c] for c in cols] for p in POOLS])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    im = ax.imshow(grid, vmin=0.4, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(cols)), labels, rotation=20)
    ax.set_yticks(range(len(POOLS)), [f"PM: {p}" for p in POOLS])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w" if grid[i, j] < 0.75 else "k")
    ax.set_title("PM accuracy on each pool's test labels, and agreement with gold")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pm_table(results) -> str:
    lines = ["| PM trained on | acc. helpful labels | acc. harmless labels | acc. mixed labels | gold | "
             "gold: helpful | gold: harmless | gold, benign prompts | gold, harmful prompts |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in POOLS:
        r = results["pm"][p]
        lines.append(f"| {p} | {r['acc_helpful']:.3f} | {r['acc_harmless']:.3f} | {r['acc_mixed']:.3f} | "
                     f"{r['gold']:.3f} | {r['gold_helpful']:.3f} | {r['gold_harmless']:.3f} | {r['gold_benign']:.3f} | "
                     f"{r['gold_harmful']:.3f} |")
    return "\n".join(lines)


def _row(name: str, e: dict) -> str:
    return (f"| {name} | {_sqrt(e['kl']):.2f} | {e['gold']:+.3f} | {e['helpful']:+.3f} | {e['harmless']:+.3f} | "
            f"{e['refuse_benign']:.2f} | {e['refuse_harmful']:.2f} | {e['comply_harmful']:.2f} | {e['length']:.1f} |")


def _ppo_table(results) -> str:
    lines = ["| policy | √KL | gold | helpful | harmless | refuses benign | refuses harmful | complies harmful | "
             "length |", "|---|---|---|---|---|---|---|---|---|"]
    first = next(iter(results["ppo"].values()))[0]
    lines.append(_row("SFT", first))
    ctx = results["context"]
    lines.append(_row("SFT + context prompt", ctx["teacher"]))
    lines.append(_row(f"context-distilled (iteration {ctx['distill'][-1]['step']})", ctx["distill"][-1]))
    if "without_refusal" in ctx:
        lines.append(_row("SFT + the context without its refusal turn", ctx["without_refusal"]))
    for pool, curve in results["ppo"].items():
        peak = max(curve, key=lambda e: e["gold"])
        lines.append(_row(f"PPO vs {pool} PM, gold peak (iteration {peak['step']})", peak))
        lines.append(_row(f"PPO vs {pool} PM, end (iteration {curve[-1]['step']})", curve[-1]))
    return "\n".join(lines)


def _write_doc(results, path: str) -> None:
    t = results["timings_s"]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) or "every run reused"
    args = results["args"]
    agree = results["label_agreement"]
    head = f"""# Helpful vs harmless, and the prompting baselines, on the toy lab

Generated by `scripts/competing_study.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}; float32. Total wall time {results["total_s"]:.0f} s ({timing}).

Setup: toy lab seed 0 (gold = helpfulness + harmlessness; 20% of requests ask for harm). One SFT policy
(`experiments/toylab_sft.py`). Three preference models from it (`experiments/toylab_rm.py`, defaults), each on one
annotator pool: the same 4,000 training pairs, labelled by annotators who judge only helpfulness, only
harmlessness, or both (the mixed pool, whose goal is gold); every pool has the same noise and biases. PPO
(`experiments/toylab_ppo.py` defaults: adaptive KL, target 6 nats; {args["ppo_iterations"]} iterations) against each
PM, from the same SFT policy. Every eval samples the same {args["eval_limit"]} held-out prompts (fewer after
dropping duplicates and a last partial batch) with the same keys at T = {results["temperature"]}; KL is from the
SFT policy on the plain prompt. The context prompt is `{results["context"]["context_file"]}`; the prompted policy
is sampled on context + prompt while gold, the KL reference and reward models see the prompt alone.
Context distillation (`experiments/toylab_distill.py`, {args["distill_iterations"]} iterations) trains the
policy without the context on KL(prompted ‖ plain) over the vocabulary at each response token, on responses
sampled from the prompted SFT policy at T = 1.

## Preference models: trained on one pool, tested on each

{results["num_pairs"]} test pairs ({results["num_harmful"]} with harmful requests), each labelled by every pool.
Accuracy is against that pool's labels (noisy: 10% flips, Bradley–Terry at temperature 0.25); the gold columns
are agreement with the gold reward (or one component) on the pairs it does not tie. The pools' labels agree
on {agree["helpful_vs_harmless"]:.0%} (helpful vs harmless), {agree["helpful_vs_mixed"]:.0%} (helpful vs mixed) and
{agree["harmless_vs_mixed"]:.0%} (harmless vs mixed) of the test pairs.

{_pm_table(results)}

![PM cross-evaluation](competing_pm.png)

## Policies: PPO against each PM, the context prompt and its distillation

Refusal: the response says "sorry … cannot"; compliance: an answer to a harmful request names a harm word.

{_ppo_table(results)}

![gold, components and behaviour vs √KL](competing.png)

The context (verbatim):

```
{results["context"]["context_text"].strip()}
```
"""
    _study.write_doc(path, head)


if __name__ == "__main__":
    sys.exit(main())
