"""PM held-out accuracy vs number of target comparisons, ranked / binary / imitation, with and without PMP.

    python scripts/pm_study.py --out runs/pm_study            # everything from scratch, ~9.5 min on 2 CPU cores
    python scripts/pm_study.py --out runs/pm_study --sft_dir runs/toylab/sft/model --toylab_dir runs/toylab/data

On the toy lab (seed 0): an SFT policy (experiments/toylab_sft.py) is the LM every PM starts from.
PMP (experiments/toylab_pmp.py, stage 1) pre-trains twice on the 8,000 `generic` comparisons: once
as a scalar PM (ranked objective; the start of the ranked and binary fine-tunes) and once with the
imitation objective (an LM; the start of the imitation fine-tunes). Each fine-tune trains on the first
n rows of the `mixed` pool's train split for the same number of steps (so small n means many epochs),
and is scored on the 400 `mixed` test pairs: accuracy vs the annotators' labels and agreement with the
gold reward's preference. Every run is an ordinary `rm` run directory under --out; finished runs are
skipped on a re-run. Writes --out/results.json, docs/pm_study.md and docs/pm_study.png (--doc_dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _study  # noqa: E402 (scripts/ is on sys.path when a script runs)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OBJECTIVES = ("ranked", "binary", "imitation")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/pm_study", help="run directories, results.json, compilation cache")
    p.add_argument("--toylab_dir", default="", help="toy lab data (default: <out>/data, built if missing)")
    p.add_argument("--sft_dir", default="", help="an SFT model dir (default: train one into <out>/sft)")
    p.add_argument("--sizes", default="125,250,500,1000,2000", help="numbers of target (mixed) comparisons")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--steps", type=int, default=100, help="fine-tune steps (batch 32) for every n")
    p.add_argument("--pretrain_steps", type=int, default=250, help="PMP steps (batch 32) on generic pairs")
    p.add_argument("--seed_check", type=int, default=250, help="n at which ranked runs are repeated with "
                   "--extra_seeds (data order and head init) to show seed-to-seed spread; 0 = none")
    p.add_argument("--extra_seeds", default="1,2")
    p.add_argument("--render", action="store_true", help="only rewrite the doc and plot from <out>/results.json")
    p.add_argument("--doc_dir", default=os.path.join(ROOT, "docs"), help="where pm_study.md/.png go")
    return p.parse_args(argv)


def _annotator_ceiling(eval_pairs) -> float:
    """Accuracy on the realised test labels of an oracle that knows the mixed pool's choice model
    and always predicts the more likely label (a PM can only approach it)."""
    import numpy as np

    from rlhfjax.data.toylab.annotators import POOLS

    pool = POOLS["mixed"]
    return float(np.mean([pool.prob_prefers_a(ex.prompt, ex.chosen, ex.rejected) > 0.5 for ex in eval_pairs]))


def _paired_diff(dir_a: str, dir_b: str) -> tuple[float, float]:
    """Accuracy(a) − accuracy(b) on the same test pairs, and its standard error over pairs."""
    import numpy as np

    a = np.load(os.path.join(dir_a, "eval_margins.npy"))
    b = np.load(os.path.join(dir_b, "eval_margins.npy"))
    score = lambda m: (m > 0) + 0.5 * (m == 0)  # noqa: E731
    d = score(a) - score(b)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def main(argv=None) -> int:
    args = _args(argv)
    t_start = time.time()
    out = os.path.abspath(args.out)
    if args.render:
        with open(os.path.join(out, "results.json")) as f:
            results = json.load(f)
        _plot(results, os.path.join(args.doc_dir, "pm_study.png"))
        _write_doc(results, os.path.join(args.doc_dir, "pm_study.md"))
        return 0
    os.makedirs(out, exist_ok=True)
    import ml_collections

    # Every fine-tune has the same shapes and schedule: compile once, reuse from disk in later runs.
    _study.compilation_cache(out)

    from rlhfjax.config import load_config
    from rlhfjax.data.hh import load_hh
    from rlhfjax.recipes import common, pmp, sft

    toylab = os.path.abspath(args.toylab_dir or os.path.join(out, "data"))
    common.ensure_toylab(toylab, 0)
    timings, reused = {}, []  # reused: finished runs found under --out (their time is not in the total)

    sft_model = args.sft_dir
    if not sft_model:
        t = time.time()
        sft_dir = os.path.join(out, "sft")
        if os.path.exists(os.path.join(sft_dir, "summary.json")):
            reused.append("sft")
        else:
            sft.run(load_config(os.path.join(ROOT, "experiments", "toylab_sft.py"),
                                [f"--config.data.toylab_dir={toylab}"]), sft_dir)
        sft_model = os.path.join(sft_dir, "model")
        timings["sft"] = time.time() - t

    base = [f"--config.data.toylab_dir={toylab}", f"--config.model.init_from={sft_model}",
            f"--config.pretrain.steps={args.pretrain_steps}", f"--config.pretrain.eval_every={args.pretrain_steps}",
            f"--config.train.steps={args.steps}", f"--config.train.eval_every={args.steps}",
            "--config.data.eval_limit=0"]
    pmp_file = os.path.join(ROOT, "experiments", "toylab_pmp.py")

    def configs(objective: str):
        pre_objective = "imitation" if objective == "imitation" else "ranked"
        cfg = load_config(pmp_file, base + [f"--config.rm.objective={objective}",
                                            f"--config.pretrain.objective={pre_objective}"])
        return pre_objective, pmp.stage_configs(cfg, os.path.join(out, f"pmp-{pre_objective}"))

    objectives = args.objectives.split(",")
    sizes = [int(n) for n in args.sizes.split(",")]
    pretrained = {}
    for objective in objectives:
        pre_objective, (stage1, _) = configs(objective)
        if pre_objective not in pretrained:
            t = time.time()
            pretrained[pre_objective], skipped = pmp.run_stage(
                "pretrain", stage1, os.path.join(out, f"pmp-{pre_objective}", "pretrain"))
            if skipped:
                reused.append(f"pretrain/{pre_objective}")
            timings[f"pretrain/{pre_objective}"] = time.time() - t

    rows = []
    runs = [(objective, n, 0) for objective in objectives for n in sizes]
    if args.seed_check and "ranked" in objectives:
        runs += [("ranked", args.seed_check, int(s)) for s in args.extra_seeds.split(",") if s]
    for objective, n, seed in runs:
        _, (_, stage2) = configs(objective)
        for arm, init_from in (("pmp", stage2.model.init_from), ("base", sft_model)):
            cfg = ml_collections.ConfigDict(stage2.to_dict())
            cfg.data.limit = n
            cfg.model.init_from = init_from
            cfg.seed = seed
            cfg.lock()
            name = f"{objective}-{arm}-{n}" + (f"-seed{seed}" if seed else "")
            workdir = os.path.join(out, "finetune", name)
            t = time.time()
            summary, skipped = pmp.run_stage(name, cfg, workdir)
            if skipped:
                reused.append(name)
            timings[f"finetune/{name}"] = time.time() - t
            rows.append({"objective": objective, "arm": arm, "n": n, "seed": seed, "workdir": workdir,
                         "accuracy": summary["final"]["eval/accuracy"],
                         "gold_agreement": summary["final"]["eval/gold_agreement"],
                         "init_accuracy": summary["init"]["eval/accuracy"],
                         "init_gold_agreement": summary["init"]["eval/gold_agreement"],
                         "train_examples": summary["train_examples"], "skipped": skipped})

    eval_pairs, _ = load_hh(os.path.join(toylab, "comparisons"), data_dir="mixed", split="test")
    with open(os.path.join(toylab, "manifest.json")) as f:
        stats = json.load(f)["stats"]
    reference = {"annotator_oracle_accuracy": _annotator_ceiling(eval_pairs),
                 "label_gold_agreement_test": stats["agreement_with_gold/mixed/test"],
                 "generic_label_gold_agreement_train": stats["agreement_with_gold/generic/train"],
                 "eval_pairs": len(eval_pairs)}
    for row in rows:
        if row["arm"] == "pmp":
            other = next(r for r in rows if (r["objective"], r["n"], r["seed"], r["arm"])
                         == (row["objective"], row["n"], row["seed"], "base"))
            row["pmp_minus_base"], row["pmp_minus_base_se"] = _paired_diff(row["workdir"], other["workdir"])
    total = time.time() - t_start
    results = {"rows": rows, "reference": reference, "pretrain": {k: v["final"] for k, v in pretrained.items()},
               "timings_s": {k: round(v, 1) for k, v in timings.items()}, "total_s": round(total, 1),
               "reused": reused, "args": vars(args), "machine": _study.machine(),
               "command": " ".join(["python", "scripts/pm_study.py"] + (sys.argv[1:] if argv is None else argv))}
    common.write_json(os.path.join(out, "results.json"), results)
    os.makedirs(args.doc_dir, exist_ok=True)
    _plot(results, os.path.join(args.doc_dir, "pm_study.png"))
    _write_doc(results, os.path.join(args.doc_dir, "pm_study.md"))
    print(_table(results))
    print(f"total {total:.0f} s", flush=True)
    return 0


def _table(results) -> str:
    rows = [r for r in results["rows"] if r["seed"] == 0]
    sizes = sorted({r["n"] for r in rows})
    lines = ["| objective | init | metric | n=0 | " + " | ".join(f"n={n}" for n in sizes) + " |",
             "|---|---|---|---|" + "---|" * len(sizes)]
    for objective in dict.fromkeys(r["objective"] for r in rows):
        for arm in ("base", "pmp"):
            for metric, name in (("accuracy", "vs annotators"), ("gold_agreement", "vs gold")):
                runs = [next(r for r in rows if (r["objective"], r["arm"], r["n"]) == (objective, arm, n))
                        for n in sizes]
                cells = [runs[0][f"init_{metric}"]] + [r[metric] for r in runs]
                init = "SFT" if arm == "base" else "PMP"
                lines.append(f"| {objective} | {init} | {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", "PMP − SFT-init accuracy vs annotators (paired over the same test pairs; ± one standard error):",
              "",
              "| objective | " + " | ".join(f"n={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for objective in dict.fromkeys(r["objective"] for r in rows):
        cells = [next(r for r in rows if (r["objective"], r["arm"], r["n"]) == (objective, "pmp", n)) for n in sizes]
        lines.append(f"| {objective} | " + " | ".join(
            f"{c['pmp_minus_base']:+.3f} ± {c['pmp_minus_base_se']:.3f}" for c in cells) + " |")
    seeds = sorted({r["seed"] for r in results["rows"]})
    if len(seeds) > 1:
        check = [r for r in results["rows"] if r["objective"] == "ranked" and r["n"] == results["args"]["seed_check"]]
        lines += ["", f"Seed-to-seed spread (ranked, n={results['args']['seed_check']}; the seed sets the order in "
                  "which the n comparisons are batched; both inits are loaded, and the new scalar head starts at "
                  "zero):", "",
                  "| seed | SFT init accuracy | PMP init accuracy | PMP − SFT init |", "|---|---|---|---|"]
        for seed in seeds:
            base, pmp_ = (next(r for r in check if (r["seed"], r["arm"]) == (seed, arm)) for arm in ("base", "pmp"))
            lines.append(f"| {seed} | {base['accuracy']:.3f} | {pmp_['accuracy']:.3f} | "
                         f"{pmp_['pmp_minus_base']:+.3f} ± {pmp_['pmp_minus_base_se']:.3f} |")
    return "\n".join(lines)


def _plot(results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, ref = [r for r in results["rows"] if r["seed"] == 0], results["reference"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colors = {"ranked": "C0", "binary": "C1", "imitation": "C2"}
    for ax, metric, title in ((axes[0], "accuracy", "accuracy vs annotators (mixed test)"),
                              (axes[1], "gold_agreement", "agreement with gold preference")):
        for objective in dict.fromkeys(r["objective"] for r in rows):
            for arm, style, marker in (("base", "--", "x"), ("pmp", "-", "o")):
                pts = sorted((r["n"], r[metric]) for r in rows if r["objective"] == objective and r["arm"] == arm)
                ax.plot(*zip(*pts), style, marker=marker, color=colors.get(objective),
                        label=f"{objective}, {'PMP' if arm == 'pmp' else 'SFT'} init")
        zero_shot = next((r[f"init_{metric}"] for r in rows if r["arm"] == "pmp" and r["objective"] == "ranked"), None)
        if zero_shot is not None:
            ax.axhline(zero_shot, color="C0", lw=0.8, ls="-.", label="scalar PMP model, not fine-tuned")
        if metric == "accuracy":
            ax.axhline(ref["annotator_oracle_accuracy"], color="grey", lw=0.8, ls=":",
                       label="annotator-model oracle")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_xscale("log")
        sizes = sorted({r["n"] for r in rows})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("target comparisons (mixed pool)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_doc(results, path: str) -> None:
    ref, t = results["reference"], results["timings_s"]
    args = results["args"]
    finetunes = [v for k, v in t.items() if k.startswith("finetune/")]
    pretrained = ", ".join(f"{k} accuracy {v['eval/accuracy']:.3f}, gold {v['eval/gold_agreement']:.3f}"
                           for k, v in results["pretrain"].items())
    reused = f" ({len(results['reused'])} finished runs reused, not timed)" if results["reused"] else ""
    head = f"""# Preference-model study: objective × data size × PMP (toy lab)

Generated by `scripts/pm_study.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}, shared with another job's tests; float32.
Total wall time {results["total_s"]:.0f} s{reused}:
{", ".join(f"{k} {v:.0f} s" for k, v in t.items() if not k.startswith("finetune/"))},
{len(finetunes)} fine-tunes {sum(finetunes):.0f} s ({min(finetunes):.0f}–{max(finetunes):.0f} s each).

Setup: toy lab seed 0; every model is the toy preset (llama-style, 2 layers, hidden 64); seed 0 unless stated.
SFT init = `experiments/toylab_sft.py` (600 steps). PMP = stage 1 of `experiments/toylab_pmp.py`:
{args["pretrain_steps"]} steps × 32 generic pairs from the SFT model, once with the ranked objective (start of the
ranked and binary fine-tunes) and once with the imitation objective (start of the imitation fine-tunes).
Fine-tunes: the first n rows of `comparisons/mixed/train`, {args["steps"]} steps × 32 for every n, LR 5e-4
cosine, 20 warm-up steps. Scored on the {ref["eval_pairs"]} `mixed` test pairs. Imitation scores a response by
its mean per-token log-likelihood. Column n=0 is the initial model, before any target comparison (a new
scalar head starts at zero, so from the SFT init every pair ties: 0.5).

Reference points: the test labels agree with the gold preference on {ref["label_gold_agreement_test"]:.3f} of
the decided pairs (the generic labels: {ref["generic_label_gold_agreement_train"]:.3f}); an oracle that knows the
mixed annotators' choice model and predicts their more likely label scores {ref["annotator_oracle_accuracy"]:.3f}
vs annotators.
Pre-trained PMs on the generic test split: {pretrained}.

{_table(results)}

![accuracy vs n](pm_study.png)
"""
    _study.write_doc(path, head)  # the prose (what the numbers show) is by hand, below the generated part


if __name__ == "__main__":
    sys.exit(main())
