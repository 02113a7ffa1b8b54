"""PM held-out accuracy vs number of target comparisons, ranked / binary / imitation, with and without PMP
(second pass: epochs, early stopping on a validation split, a small LR grid, several seeds).

    python scripts/pm_study.py --out runs/pm_study   # from scratch: 24 min on 2 busy CPU cores (docs/pm_study.md)
    python scripts/pm_study.py --out runs/pm_study --sft_dir runs/toylab/sft/model --toylab_dir runs/toylab/data

On the toy lab (seed 0): an SFT policy (experiments/toylab_sft.py) is the LM every PM starts from.
PMP (experiments/toylab_pmp.py, stage 1) pre-trains twice on the 8,000 `generic` comparisons: once
as a scalar PM (ranked objective; the start of the ranked and binary fine-tunes) and once with the
imitation objective (an LM; the start of the imitation fine-tunes).

Fine-tuning protocol (every fine-tune is an ordinary `rm` run directory under --out/finetune):
- the first n rows of the `mixed` pool's train split; `--val_fraction` of them (a draw from the run's
  seed) are held out for validation, the rest train;
- a budget in epochs, not steps: epochs(n) = clamp(round(--epoch_pairs / training pairs), --min_epochs,
  --max_epochs), batch 32, a constant LR after --warmup steps (the schedule is compiled into the update,
  so one schedule for every n means one compile per (objective, LR) instead of one per run);
- early stopping: validation after every epoch, and the exported model is the one with the best
  `--select_by` validation metric, the initial model (step 0) included;
- the LR: each of `--lrs` is run with the first seed, and the one with the best validation metric is
  kept for that (objective, init, n); the other seeds run with it. Cells report mean ± standard error
  over the seeds.
Scored on the 400 `mixed` test pairs: accuracy vs the annotators' labels and agreement with the gold
reward's preference. Finished runs are skipped on a re-run (an interrupted one resumes). Writes
--out/results.json, docs/pm_study.md and docs/pm_study.png (--doc_dir).
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
ARMS = (("base", "SFT"), ("pmp", "PMP"))

# The first pass (fixed 100 steps × 32 at LR 5e-4 for every n, one seed), from docs/pm_study.md as of
# commit 641f1b7: accuracy vs annotators per (objective, init) at n = 0, 125, 250, 500, 1000, 2000.
V1_SIZES = (0, 125, 250, 500, 1000, 2000)
V1_ACCURACY = {
    ("ranked", "base"): (0.500, 0.605, 0.662, 0.675, 0.708, 0.703),
    ("ranked", "pmp"): (0.710, 0.627, 0.677, 0.723, 0.705, 0.715),
    ("binary", "base"): (0.500, 0.590, 0.685, 0.665, 0.713, 0.693),
    ("binary", "pmp"): (0.710, 0.623, 0.682, 0.725, 0.703, 0.723),
    ("imitation", "base"): (0.642, 0.642, 0.652, 0.662, 0.670, 0.660),
    ("imitation", "pmp"): (0.655, 0.642, 0.655, 0.662, 0.667, 0.662),
}


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/pm_study", help="run directories, results.json, compilation cache")
    p.add_argument("--toylab_dir", default="", help="toy lab data (default: <out>/data, built if missing)")
    p.add_argument("--sft_dir", default="", help="an SFT model dir (default: train one into <out>/sft)")
    p.add_argument("--sizes", default="125,250,500,1000,2000", help="numbers of target (mixed) comparisons")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--seeds", default="0,1,2", help="fine-tune seeds (validation draw, batch order); LRs are "
                   "chosen with the first")
    p.add_argument("--lrs", default="1e-4,5e-4", help="fine-tuning LR grid, chosen on validation per cell")
    p.add_argument("--imitation_lrs", default="5e-4", help="the imitation objective's grid (smaller: its "
                   "curve hardly moves with the protocol, and its LM-head runs are the slowest)")
    p.add_argument("--val_fraction", type=float, default=0.2, help="share of the n pairs held out for validation")
    p.add_argument("--select_by", default="accuracy", choices=("loss", "accuracy"), help="validation metric")
    p.add_argument("--epoch_pairs", type=int, default=1600, help="epochs(n) ≈ this / training pairs, clamped")
    p.add_argument("--min_epochs", type=int, default=1)
    p.add_argument("--max_epochs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5, help="linear LR warm-up steps, then constant")
    p.add_argument("--pretrain_steps", type=int, default=250, help="PMP steps (batch 32) on generic pairs")
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


def lab_statistics(pairs) -> dict:
    """What in the comparisons lets a per-response classifier (binary discrimination) rank as well as a
    pairwise model. Both see the prompt; binary must score each response on an absolute scale, ranked only
    the difference within a pair, so binary pays when the level a response is judged against moves from
    pair to pair, and loses nothing when pairs are decided by features that are good or bad anywhere.
    With u = the mixed annotators' utility (gold + their length and politeness biases):
    - pairwise_order: share of pairs whose u is ordered as labelled (a pairwise model's reach);
    - cross_pair_order: P(u(chosen of pair i) > u(rejected of pair j)), random i ≠ j: equal to
      pairwise_order when the level does not depend on the pair;
    - within_pair_correlation: corr(u_a, u_b) of a pair's two responses (0: no shared per-pair level);
    - threshold_split: the largest share of pairs that ONE global threshold on u separates (chosen above);
    - marker_differs / marker_decides: share of pairs whose responses differ in an absolute marker (a harm
      word, the requested `with` word, the forbidden `without` word), and share of gold-decided pairs where
      that marker's side is the gold winner;
    - one_component_decides: share of gold-decided pairs where only one gold component (helpfulness or
      harmlessness) differs."""
    import numpy as np

    from rlhfjax.data.toylab.annotators import POOLS
    from rlhfjax.data.toylab.gold import gold_components
    from rlhfjax.data.toylab.world import HARM_WORDS, parse_request

    def marker(prompt: str, response: str) -> int:  # > 0 good, < 0 bad, whatever else the response says
        request, words = parse_request(prompt), set(response.lower().split())
        score = -int(bool(words & set(HARM_WORDS)))
        if request is not None:
            score += int(bool(request.include and request.include in words))
            score -= int(bool(request.avoid and request.avoid in words))
        return score

    pool = POOLS["mixed"]
    u_c = np.array([pool.utility(ex.prompt, ex.chosen) for ex in pairs])
    u_r = np.array([pool.utility(ex.prompt, ex.rejected) for ex in pairs])
    thresholds = np.unique(np.concatenate([u_c, u_r]))
    split = max(float(np.mean((u_c > t) & (u_r <= t))) for t in thresholds)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(pairs), 20000), rng.integers(0, len(pairs), 20000)
    i, j = i[i != j], j[i != j]
    cross = float(np.mean((u_c[i] > u_r[j]) + 0.5 * (u_c[i] == u_r[j])))
    swap = rng.random(len(pairs)) < 0.5  # the pair's order, not its label
    corr = float(np.corrcoef(np.where(swap, u_c, u_r), np.where(swap, u_r, u_c))[0, 1])
    g_c = [gold_components(ex.prompt, ex.chosen) for ex in pairs]
    g_r = [gold_components(ex.prompt, ex.rejected) for ex in pairs]
    d = {k: np.array([a[k] - b[k] for a, b in zip(g_c, g_r)]) for k in ("gold", "helpful", "harmless")}
    dm = np.array([marker(ex.prompt, ex.chosen) - marker(ex.prompt, ex.rejected) for ex in pairs])
    decided = d["gold"] != 0
    return {"pairwise_order": float(np.mean(u_c > u_r) + 0.5 * np.mean(u_c == u_r)), "cross_pair_order": cross,
            "within_pair_correlation": corr, "threshold_split": split,
            "marker_differs": float(np.mean(dm != 0)),
            "marker_decides": float(np.sum(decided & (np.sign(dm) == np.sign(d["gold"])) & (dm != 0)) / decided.sum()),
            "one_component_decides": float(np.sum(decided & ((d["harmless"] == 0) | (d["helpful"] == 0)))
                                           / decided.sum()),
            "pairs": len(pairs)}


def _lab(toylab: str) -> dict:
    from rlhfjax.data.hh import load_hh

    return {f"mixed/{split}": lab_statistics(load_hh(os.path.join(toylab, "comparisons"), data_dir="mixed",
                                                     split=split)[0]) for split in ("train", "test")}


def epochs_for(n: int, args) -> tuple[int, int]:
    """(epochs, training pairs) for n target comparisons (the recipe holds out round(val_fraction · n))."""
    n_train = n - max(1, int(round(args.val_fraction * n)))
    return min(args.max_epochs, max(args.min_epochs, round(args.epoch_pairs / n_train))), n_train


def _mean_se(values) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _paired_diff(dir_a: str, dir_b: str) -> list[float]:
    """Per test pair: correct(a) − correct(b) (a tie counts half)."""
    import numpy as np

    score = lambda m: (m > 0) + 0.5 * (m == 0)  # noqa: E731
    a, b = (np.load(os.path.join(d, "eval_margins.npy")) for d in (dir_a, dir_b))
    return (score(a) - score(b)).tolist()


def _fill_paired(rows) -> None:
    """Each selected PMP row gets its per-pair difference to the SFT-init run with the same seed."""
    for row in rows:
        if row["arm"] == "pmp" and row["selected"] and "pmp_minus_base_per_pair" not in row:
            other = next(r for r in rows if r["selected"] and (r["objective"], r["n"], r["seed"], r["arm"])
                         == (row["objective"], row["n"], row["seed"], "base"))
            row["pmp_minus_base_per_pair"] = _paired_diff(row["workdir"], other["workdir"])
            row["pmp_minus_base"] = sum(row["pmp_minus_base_per_pair"]) / len(row["pmp_minus_base_per_pair"])


def main(argv=None) -> int:
    args = _args(argv)
    t_start = time.time()
    out = os.path.abspath(args.out)
    if args.render:
        results = _study.load_results(out)
        toylab = args.toylab_dir or os.path.join(out, "data")
        if os.path.isdir(toylab):  # the lab statistics are cheap: recompute them with this script's definition
            results["lab"] = _lab(toylab)
        _fill_paired(results["rows"])  # results of an earlier version of this script lack the per-pair values
        _study.save_results(out, results)
        _plot(results, os.path.join(args.doc_dir, "pm_study.png"))
        _write_doc(results, os.path.join(args.doc_dir, "pm_study.md"))
        return 0
    os.makedirs(out, exist_ok=True)
    import ml_collections

    # Fine-tunes share shapes: compile once, reuse from disk in later runs and re-runs.
    _study.compilation_cache(out)

    from rlhfjax.config import load_config
    from rlhfjax.data.hh import load_hh
    from rlhfjax.data.sources import ensure_toylab
    from rlhfjax.recipes import pmp, rm, sft

    toylab = os.path.abspath(args.toylab_dir or os.path.join(out, "data"))
    ensure_toylab(toylab, 0)
    timings, reused = {}, []  # reused: finished runs found under --out (their time is not in the total)

    sft_model = args.sft_dir
    if not sft_model:
        t = time.time()
        sft_dir = os.path.join(out, "sft")
        if _study.finished(sft_dir):
            reused.append("sft")
        else:
            sft.run(load_config(os.path.join(ROOT, "experiments", "toylab_sft.py"),
                                [f"--config.data.toylab_dir={toylab}"]), sft_dir)
        sft_model = os.path.join(sft_dir, "model")
        timings["sft"] = time.time() - t

    base = [f"--config.data.toylab_dir={toylab}", f"--config.model.init_from={sft_model}",
            f"--config.pretrain.steps={args.pretrain_steps}", f"--config.pretrain.eval_every={args.pretrain_steps}",
            "--config.data.eval_limit=0"]
    pmp_file = os.path.join(ROOT, "experiments", "toylab_pmp.py")

    def configs(objective: str):
        pre_objective = "imitation" if objective == "imitation" else "ranked"
        cfg = load_config(pmp_file, base + [f"--config.rm.objective={objective}",
                                            f"--config.pretrain.objective={pre_objective}"])
        return pre_objective, pmp.stage_configs(cfg, os.path.join(out, f"pmp-{pre_objective}"))

    objectives = args.objectives.split(",")
    sizes = [int(n) for n in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    grids = {o: [float(x) for x in (args.imitation_lrs if o == "imitation" else args.lrs).split(",")]
             for o in objectives}
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

    def finetune(objective: str, arm: str, n: int, lr: float, seed: int) -> dict:
        _, (_, stage2) = configs(objective)
        epochs, _ = epochs_for(n, args)
        cfg = ml_collections.ConfigDict(stage2.to_dict())
        cfg.data.limit = n
        cfg.model.init_from = stage2.model.init_from if arm == "pmp" else sft_model
        cfg.seed = seed
        cfg.optim.learning_rate = lr
        cfg.optim.schedule = "constant"
        cfg.optim.warmup_steps = args.warmup
        cfg.train.epochs = epochs
        cfg.train.save_every = 0  # a checkpoint at the end only; the best params keep their own
        cfg.train.log_every = 10 ** 6  # the evals (every epoch) and the last step are logged anyway
        cfg.rm.val_fraction = args.val_fraction
        cfg.rm.select_by = args.select_by
        cfg.lock()
        name = f"{objective}-{arm}-n{n}-lr{lr:g}-s{seed}"
        workdir = os.path.join(out, "finetune", name)
        t = time.time()
        if _study.finished(workdir):
            reused.append(name)
            with open(os.path.join(workdir, "summary.json")) as f:
                summary = json.load(f)
        else:
            summary = rm.run(cfg, workdir)
        timings[f"finetune/{name}"] = time.time() - t
        final, init = summary["final"], summary["init"]
        metric = f"val/{args.select_by}"
        return {"objective": objective, "arm": arm, "n": n, "lr": lr, "seed": seed, "workdir": workdir,
                "accuracy": final["eval/accuracy"], "gold_agreement": final["eval/gold_agreement"],
                "val": final[metric], "init_val": init[metric], "best_step": summary["best_step"],
                "steps": summary["steps"], "epochs": epochs, "train_examples": summary["train_examples"],
                "init_accuracy": init["eval/accuracy"], "init_gold_agreement": init["eval/gold_agreement"]}

    better = min if args.select_by == "loss" else max
    rows, chosen = [], {}
    for objective in objectives:
        for arm, _ in ARMS:
            for n in sizes:
                grid = [finetune(objective, arm, n, lr, seeds[0]) for lr in grids[objective]]
                rows += grid
                pick = better(grid, key=lambda r: r["val"])  # first listed wins a tie
                chosen[f"{objective}/{arm}/{n}"] = pick["lr"]
                rows += [finetune(objective, arm, n, pick["lr"], s) for s in seeds[1:]]

    eval_pairs, _ = load_hh(os.path.join(toylab, "comparisons"), data_dir="mixed", split="test")
    with open(os.path.join(toylab, "manifest.json")) as f:
        stats = json.load(f)["stats"]
    reference = {"annotator_oracle_accuracy": _annotator_ceiling(eval_pairs),
                 "label_gold_agreement_test": stats["agreement_with_gold/mixed/test"],
                 "generic_label_gold_agreement_train": stats["agreement_with_gold/generic/train"],
                 "eval_pairs": len(eval_pairs)}
    for row in rows:
        row["selected"] = chosen[f"{row['objective']}/{row['arm']}/{row['n']}"] == row["lr"]
    _fill_paired(rows)
    total = time.time() - t_start
    results = {"rows": rows, "chosen_lr": chosen, "reference": reference,
               "lab": _lab(toylab),
               "pretrain": {k: v["final"] for k, v in pretrained.items()},
               "timings_s": {k: round(v, 1) for k, v in timings.items()}, "total_s": round(total, 1),
               "reused": reused, "args": vars(args), "machine": _study.machine(),
               "command": " ".join(["python", "scripts/pm_study.py"] + (sys.argv[1:] if argv is None else argv))}
    _study.save_results(out, results)
    os.makedirs(args.doc_dir, exist_ok=True)
    _plot(results, os.path.join(args.doc_dir, "pm_study.png"))
    _write_doc(results, os.path.join(args.doc_dir, "pm_study.md"))
    print(_tables(results))
    print(f"total {total:.0f} s", flush=True)
    return 0


def _cells(results):
    """{(objective, arm, n): selected-LR rows over seeds}, objectives in run order, sizes sorted."""
    cells: dict = {}
    for r in results["rows"]:
        if r["selected"]:
            cells.setdefault((r["objective"], r["arm"], r["n"]), []).append(r)
    return cells


def _diff_cell(rows) -> str:
    import numpy as np

    mean, se = _mean_se([r["pmp_minus_base"] for r in rows])
    per_pair = np.mean([r["pmp_minus_base_per_pair"] for r in rows], axis=0)
    return f"{mean:+.3f} ± {se:.3f} [{per_pair.std(ddof=1) / np.sqrt(len(per_pair)):.3f}]"


def _tables(results) -> str:
    cells = _cells(results)
    objectives = list(dict.fromkeys(k[0] for k in cells))
    sizes = sorted({k[2] for k in cells})
    k = len(next(iter(cells.values())))
    n_eval = results["reference"]["eval_pairs"]
    cell = lambda rs, key: "{:.3f} ± {:.3f}".format(*_mean_se([r[key] for r in rs]))  # noqa: E731
    lines = [f"Mean ± standard error over {k} seeds (validation draw and batch order), at the LR chosen on",
             "validation. The seeds share the test pairs, so this is training noise only; one accuracy of 0.7 on",
             f"{n_eval} pairs has a sampling error of ±{(0.21 / n_eval) ** 0.5:.3f} on top.", "",
             "| objective | init | metric | n=0 | " + " | ".join(f"n={n}" for n in sizes) + " |",
             "|---|---|---|---|" + "---|" * len(sizes)]
    for objective in objectives:
        for arm, init in ARMS:
            for metric, name in (("accuracy", "vs annotators"), ("gold_agreement", "vs gold")):
                first = cells[(objective, arm, sizes[0])][0]
                row = [f"{first['init_' + metric]:.3f}"] + [cell(cells[(objective, arm, n)], metric) for n in sizes]
                lines.append(f"| {objective} | {init} | {name} | " + " | ".join(row) + " |")
    lines += ["", "PMP − SFT-init accuracy vs annotators, each seed paired with itself over the same test pairs:",
              "mean ± standard error over seeds (training noise), then in brackets the standard error over the",
              f"{n_eval} test pairs of the seed-averaged difference (test-set noise):",
              "", "| objective | " + " | ".join(f"n={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for objective in objectives:
        lines.append(f"| {objective} | " + " | ".join(_diff_cell(cells[(objective, "pmp", n)]) for n in sizes) + " |")
    lines += ["", "Chosen LR / best step of the first seed (of its steps; 0 = the initial model kept) / epochs:", "",
              "| objective | init | " + " | ".join(f"n={n}" for n in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for objective in objectives:
        for arm, init in ARMS:
            rs = [cells[(objective, arm, n)][0] for n in sizes]
            lines.append(f"| {objective} | {init} | " + " | ".join(
                f"{r['lr']:g} / {r['best_step']} of {r['steps']} / {r['epochs']}" for r in rs) + " |")
    stopped_at_0 = [r for rs in cells.values() for r in rs if r["best_step"] == 0]
    lines += ["", f"Runs whose early stopping kept the initial model (best step 0): {len(stopped_at_0)} of "
              f"{sum(len(rs) for rs in cells.values())}."]
    v1_sizes = [n for n in sizes if n in V1_SIZES]
    lines += ["", "First pass (100 steps × 32 at LR 5e-4 for every n, one seed) → this pass, accuracy vs "
              "annotators:",
              "", "| objective | init | " + " | ".join(f"n={n}" for n in v1_sizes) + " |",
              "|---|---|" + "---|" * len(v1_sizes)]
    for objective in objectives:
        for arm, init in ARMS:
            old = V1_ACCURACY.get((objective, arm))
            if old:
                new = [_mean_se([r["accuracy"] for r in cells[(objective, arm, n)]])[0] for n in v1_sizes]
                lines.append(f"| {objective} | {init} | " + " | ".join(
                    f"{old[V1_SIZES.index(n)]:.3f} → {x:.3f}" for n, x in zip(v1_sizes, new)) + " |")
    return "\n".join(lines)


def _plot(results, path: str) -> None:
    plt = _study.pyplot()

    cells, ref = _cells(results), results["reference"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colors = {"ranked": "C0", "binary": "C1", "imitation": "C2"}
    sizes = sorted({k[2] for k in cells})
    for ax, metric, title in ((axes[0], "accuracy", "accuracy vs annotators (mixed test)"),
                              (axes[1], "gold_agreement", "agreement with gold preference")):
        for objective in dict.fromkeys(k[0] for k in cells):
            for arm, style, marker in (("base", "--", "x"), ("pmp", "-", "o")):
                stats = [_mean_se([r[metric] for r in cells[(objective, arm, n)]]) for n in sizes]
                ax.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats], ls=style, marker=marker,
                            color=colors.get(objective), capsize=2,
                            label=f"{objective}, {'PMP' if arm == 'pmp' else 'SFT'} init")
        zero_shot = next((rs[0][f"init_{metric}"] for k, rs in cells.items() if k[:2] == ("ranked", "pmp")), None)
        if zero_shot is not None:
            ax.axhline(zero_shot, color="C0", lw=0.8, ls="-.", label="scalar PMP model, not fine-tuned")
        if metric == "accuracy":
            ax.axhline(ref["annotator_oracle_accuracy"], color="grey", lw=0.8, ls=":",
                       label="annotator-model oracle")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_xscale("log")
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
    ref, t, args = results["reference"], results["timings_s"], results["args"]
    finetunes = [v for k, v in t.items() if k.startswith("finetune/")]
    pretrained = ", ".join(f"{k} accuracy {v['eval/accuracy']:.3f}, gold {v['eval/gold_agreement']:.3f}"
                           for k, v in results["pretrain"].items())
    reused = f" ({len(results['reused'])} finished runs reused, not timed)" if results["reused"] else ""
    span = f"{min(finetunes, default=0):.0f}–{max(finetunes, default=0):.0f}"
    sizes = [int(n) for n in args["sizes"].split(",")]
    budget = ", ".join(f"n={n}: {epochs_for(n, argparse.Namespace(**args))[0]}" for n in sizes)
    lab = results["lab"]["mixed/train"]
    head = f"""# Preference-model study: objective × data size × PMP (toy lab), second pass

Generated by `scripts/pm_study.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}, shared with other jobs; float32.
Total wall time {results["total_s"]:.0f} s{reused}:
{", ".join(f"{k} {v:.0f} s" for k, v in t.items() if not k.startswith("finetune/"))},
{len(finetunes)} fine-tunes {sum(finetunes):.0f} s ({span} s each).

Setup: toy lab seed 0; every model is the toy preset (llama-style, 2 layers, hidden 64).
SFT init = `experiments/toylab_sft.py` (600 steps). PMP = stage 1 of `experiments/toylab_pmp.py`:
{args["pretrain_steps"]} steps × 32 generic pairs from the SFT model, once with the ranked objective (start of the
ranked and binary fine-tunes) and once with the imitation objective (start of the imitation fine-tunes).

Fine-tuning protocol (the `rm` recipe's `train.epochs`, `rm.val_fraction`, `rm.select_by`): the first n rows
of `comparisons/mixed/train`; {args["val_fraction"]:.0%} of them, drawn from the seed, are a validation split and
the rest train. Batch 32, a constant LR after {args["warmup"]} warm-up steps, epochs by n:
{budget}.
After every epoch the run validates; it exports the params with the best validation {args["select_by"]}
(`rm.select_by={args["select_by"]}`; a tie keeps the earlier step), the initial model included. LR grid
{args["lrs"]}: every LR runs with seed {args["seeds"].split(",")[0]}, the one with the best validation
{args["select_by"]} is kept per (objective, init, n), and seeds {args["seeds"]} all use it (imitation:
{args["imitation_lrs"]} only, to fit the time budget). Scored on the {ref["eval_pairs"]} `mixed` test pairs.
Imitation scores a response by its mean per-token log-likelihood. Column n=0 is the initial model (a new
scalar head starts at zero, so from the SFT init every pair ties: 0.5).

Reference points: the test labels agree with the gold preference on {ref["label_gold_agreement_test"]:.3f} of
the decided pairs (the generic labels: {ref["generic_label_gold_agreement_train"]:.3f}); an oracle that knows the
mixed annotators' choice model and predicts their more likely label scores {ref["annotator_oracle_accuracy"]:.3f}
vs annotators.
Pre-trained PMs on the generic test split: {pretrained}.

{_tables(results)}

![accuracy vs n](pm_study.png)

Binary vs ranked: what the lab's comparisons look like (`lab_statistics` in the script, on the
{lab["pairs"]} `mixed` train pairs, with the annotators' utility = gold + their length and politeness biases):

| statistic | value |
|---|---|
| pairs ordered as labelled by the annotators' utility u (a pairwise model's reach) | {lab["pairwise_order"]:.3f} |
| P(u(chosen of pair i) > u(rejected of pair j)), random i ≠ j | {lab["cross_pair_order"]:.3f} |
| correlation of the two responses' u within a pair | {lab["within_pair_correlation"]:.3f} |
| pairs that ONE global threshold on u separates (chosen above, rejected below) | {lab["threshold_split"]:.3f} |
| pairs whose responses differ in an absolute marker (harm word, the `with` word, the `without` word) \
| {lab["marker_differs"]:.3f} |
| gold-decided pairs won by the marker's better side | {lab["marker_decides"]:.3f} |
| gold-decided pairs where only one gold component (helpfulness or harmlessness) differs \
| {lab["one_component_decides"]:.3f} |
"""
    _study.write_doc(path, head)  # the prose (what the numbers show) is by hand, below the generated part


if __name__ == "__main__":
    sys.exit(main())
