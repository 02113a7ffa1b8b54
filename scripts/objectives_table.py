"""Every objective once on the toy lab's reward vs √KL axes → docs/objectives.md: the method, its objective, the
paper, its experiment file's defaults, and where it lands (the observed gold peak and the √KL at which it is
reached, one seed), beside the noise of one eval (the standard error of the held-out gold mean).

    python scripts/objectives_table.py                          # runs (or reuses) runs/objectives, writes the doc
    python scripts/objectives_table.py --config.sft_dir=runs/toylab/sft/model --config.rm_dir=runs/toylab/rm/model
    python scripts/objectives_table.py --render                 # only rewrite the doc from runs/objectives

The runs are `scripts/kl_scaling.py` on the `:objectives` variant of experiments/kl_scaling_toy.py (every method
with its experiment file's own settings, from one SFT policy and RM, the same temperature and eval prompts), whose
curves and Gao et al. fits go to docs/objectives_curves.md (+ PNG); `--config.x=y` overrides go to that sweep.
"""

from __future__ import annotations

import json
import os
import sys

import _study  # noqa: E402 (scripts/ is on sys.path when a script runs)
import kl_scaling  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SWEEP = "experiments/kl_scaling_toy.py:objectives"
DOC = os.path.join(ROOT, "docs", "objectives.md")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    render_only = "--render" in argv
    overrides = [a for a in argv if a != "--render"]
    if not render_only:
        kl_scaling.main(["--config", SWEEP, *overrides])  # relative: the docs show the command as typed
    sweep = kl_scaling._load(SWEEP, overrides)
    out = os.path.abspath(kl_scaling._path(sweep.out))
    text = render(_study.load_results(out), out, " ".join(["python scripts/objectives_table.py", *argv]))
    _study.write_doc(DOC, text)
    print(text, flush=True)
    return 0


def _defaults(method: str, config_path: str) -> str:
    """The method's own section of its experiment file, and the learning rate: what "its defaults" means here."""
    cfg = kl_scaling._load(config_path, [])
    section = cfg[method] if method in cfg else {}
    fields = [f"{k}={v}" for k, v in section.items() if not isinstance(v, (dict, list)) and k != "reference_batch_size"]
    return ", ".join([*fields, f"lr={cfg.optim.learning_rate:g}"])


def _start_se(workdir: str) -> float:
    """eval/reward/gold_se of the run's first eval (the SFT policy), NaN when not logged."""
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if "eval/reward/gold_se" in rec:
                    return float(rec["eval/reward/gold_se"])
    return float("nan")


def landing(rows: list[dict]) -> dict:
    """Where one run lands on the axes: its observed gold peak (Δgold over its first eval, √KL and step there) and
    its last eval (Δgold, √KL). Best-of-n's rows are per n (step = n)."""
    from rlhfjax.analysis.kl_scaling import relative_to_start

    rel = relative_to_start(sorted(rows, key=lambda r: r["step"]))
    peak = max(rel, key=lambda r: r["dgold"])
    last = rel[-1]
    return {"dgold": peak["dgold"], "sqrt_kl": peak["sqrt_kl"], "step": peak["step"],
            "last_dgold": last["dgold"], "last_sqrt_kl": last["sqrt_kl"], "last_step": last["step"]}


def render(results: dict, out: str, command: str) -> str:
    from rlhfjax.commands import get

    sweep = results["sweep"]
    lines = ["| method | objective | paper | defaults (its experiment file) | gold peak Δ (± SE) | √KL at the peak "
             "(step) | last eval: Δgold, √KL (step) | run time |", "|---|---|---|---|---|---|---|---|"]
    ses = []
    for method in sweep["methods"]:
        rows = [r for r in results["rows"] if r["method"] == method]
        if not rows:
            continue
        command_ = get(method)
        workdir = os.path.join(out, method) if method == "bon" else os.path.join(out, method, kl_scaling.DEFAULT)
        se = _start_se(workdir)
        if se == se:
            ses.append(se)
        at = landing(rows)
        step = "n = {}" if method == "bon" else "step {}"
        seconds = results["timings_s"].get(f"{method} {kl_scaling.DEFAULT}", results["timings_s"].get(method))
        lines.append(
            f"| {method} | {command_.objective or '–'} | {command_.paper or '–'} | "
            f"`{_defaults(method, sweep[method]['config'])}` | {at['dgold']:+.3f}"
            f"{f' (± {se:.3f})' if se == se else ''} | {at['sqrt_kl']:.2f} ({step.format(at['step'])}) | "
            f"{at['last_dgold']:+.3f}, {at['last_sqrt_kl']:.2f} ({step.format(at['last_step'])}) | "
            f"{'reused' if seconds is None else f'{seconds:.0f} s'} |")
    spread = f"{min(ses):.3f}" if f"{min(ses):.3f}" == f"{max(ses):.3f}" else f"{min(ses):.3f}–{max(ses):.3f}"
    yardstick = (f"The noise yardstick: one eval's gold mean has a standard error of {spread} "
                 f"(std / √n over its prompts, at the SFT policy); a difference of two evals on the same prompts and "
                 f"keys is noisier by at most √2 of that.") if ses else "No eval logged eval/reward/gold_se."
    return f"""# The objectives, side by side on the toy lab

Generated by `scripts/objectives_table.py`; the text after the generated part is by hand.

```
{command}
```

Machine: {results["machine"]}; float32. Wall time of the runs {results["total_s"]:.0f} s.

Every method trains from the same SFT policy with its experiment file's own settings (one seed), samples at
temperature {sweep["temperature"]} and is evaluated on the same {sweep["eval_prompts"]} held-out prompts with the
same keys; Δgold is the toy lab's gold reward over the run's first eval (the SFT policy; best-of-n: n = 1), √KL
the square root of the k1 KL of the eval samples from the SFT policy. The curves and Gao et al.'s fits of every
method are in [objectives_curves.md](objectives_curves.md). {yardstick}

{chr(10).join(lines)}
"""


if __name__ == "__main__":
    sys.exit(main())
