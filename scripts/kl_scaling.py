"""Reward vs √KL sweep across methods: PPO at fixed KL coefficients, SuperHF at several KL coefficients,
best-of-n at several n and DPO at several β — and any other registered method named in the sweep's `methods` —
from one SFT policy and one reward model on the toy lab.

    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py [--config.x=y ...]
    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py --render   # redraw from results.json

The sweep (methods, swept fields and their grids, iterations, stages, output paths) is the config file; see
its docstring for each field. Every (method, value) is an ordinary run directory `<out>/<method>/<value>` run in
process by its recipe (a method run once with its own settings: `<out>/<method>/default`; best-of-n: one run
`<out>/bon` for every n); a run whose summary.json exists is reused. Writes `<out>/kl_scaling.csv` (method, value,
step, sqrt_kl, kl, proxy, gold: every held-out eval of every run), `<out>/results.json`, and the markdown summary
+ PNG at `doc` (by default docs/kl_scaling.{md,png}): per method, Gao et al.'s fit of gold reward vs √KL, the
proxy's slope vs √KL and its R² over the early range, and the √KL at which gold peaks.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import _study  # noqa: E402 (scripts/ is on sys.path when a script runs)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = "base"  # sft_dir / rm_dir: keep each method config's own init_from
DEFAULT = "default"  # the value name of a method's one run with its experiment file's own settings


def _form(method: str) -> str:
    """Gao et al.'s functional form: best-of-n's, or the RL one for every method that trains a policy."""
    return "bon" if method == "bon" else "rl"


def _label(sweep: dict, method: str, value) -> str:
    field = sweep[method]["field"]
    return f"{method} {field.split('.')[-1]} = {_name(value)}" if field else f"{method} ({_name(value)})"


def _args(argv=None):
    from rlhfjax.config import split_overrides

    overrides, rest = split_overrides(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "experiments", "kl_scaling_toy.py"),
                   help="the sweep's config file[:variant]; --config.<field>=<value> overrides a field")
    p.add_argument("--render", action="store_true", help="only rewrite the CSV, doc and plot from results.json")
    return p.parse_args(rest), overrides


def _path(p: str) -> str:
    return p if os.path.isabs(p) else os.path.join(ROOT, p)


def _name(value) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _load(config_string: str, overrides: list[str]):
    from rlhfjax.config import load_config

    path, colon, variant = config_string.partition(":")
    return load_config(_path(path) + colon + variant, overrides)


def main(argv=None) -> int:
    args, overrides = _args(argv)
    sweep = _load(args.config, overrides)
    out = os.path.abspath(_path(sweep.out))
    if args.render:
        _render(_study.load_results(out), sweep)
        return 0
    os.makedirs(out, exist_ok=True)
    if sweep.compilation_cache:
        _study.compilation_cache(out)
    import importlib

    from rlhfjax import parallel
    from rlhfjax.analysis.kl_scaling import eval_curve
    from rlhfjax.commands import get
    from rlhfjax.recipes import rm, sft

    load_start = os.getloadavg()
    mesh = parallel.single_device_mesh() if sweep.single_device else None
    lab = f"--config.data.toylab_dir={_path(sweep.toylab_dir) if sweep.toylab_dir else os.path.join(out, 'data')}"
    stages = _study.Stages()

    def extra(section):
        return [f"--config.{kv}" for kv in section.extra]

    sft_dir, rm_dir = (d if d in ("", BASE) else _path(d) for d in (sweep.sft_dir, sweep.rm_dir))
    if not sft_dir:
        run_dir = os.path.join(out, "sft")
        sft_dir = os.path.join(run_dir, "model")
        cfg = _load(sweep.sft.config, [lab, *extra(sweep.sft)])
        stages.run("sft", run_dir, lambda: sft.run(cfg, run_dir, mesh))
    if not rm_dir:
        run_dir = os.path.join(out, "rm")
        rm_dir = os.path.join(run_dir, "model")
        init = [] if sft_dir == BASE else [f"--config.model.init_from={sft_dir}"]
        cfg = _load(sweep.rm.config, [lab, *init, *extra(sweep.rm)])
        stages.run("rm", run_dir, lambda: rm.run(cfg, run_dir, mesh))

    models = [lab] + [f"--config.{k}.init_from={d}" for k, d in (("policy", sft_dir), ("reward", rm_dir)) if d != BASE]
    runs = {}  # method -> [(value, workdir, eval-record prefix)]
    for method, value, flags in jobs(sweep, models):
        section = sweep[method]
        recipe = importlib.import_module(get(method).module)
        name = method if value is None else f"{method} {_name(value)}"  # best-of-n: one run for all its n
        workdir = os.path.join(out, method) if value is None else os.path.join(out, method, _name(value))
        cfg = _load(section.config, [*flags, *extra(section)])
        stages.run(name, workdir, lambda: recipe.run(cfg, workdir, mesh))
        runs.setdefault(method, []).append((value, workdir, "" if method == "bon" else "eval/"))

    rows = []
    for method in sweep.methods:
        for value, workdir, prefix in runs.get(method, []):
            for r in eval_curve(os.path.join(workdir, "metrics.jsonl"), prefix):
                rows.append({"method": method, "value": r["step"] if method == "bon" else value, **r})
    results = {"command": "python " + " ".join([os.path.relpath(os.path.abspath(__file__), ROOT),
                                                 *(sys.argv[1:] if argv is None else argv)]),
               "machine": _study.machine(), "sweep": sweep.to_dict(), "rows": rows,
               "sft_dir": sft_dir, "rm_dir": rm_dir, "loadavg_start": load_start}
    stages.record(results, out)
    results["loadavg_end"] = os.getloadavg()
    _study.save_results(out, results)
    text = _render(results, sweep)
    print(text, flush=True)
    return 0


def jobs(sweep, models: list[str]) -> list[tuple[str, object, list[str]]]:
    """(method, value, overrides) of every run of the sweep, in `sweep.methods` order: the method's experiment file
    gets the shared policy, reward model and toy lab (`models`), the sweep's temperature and eval prompts (online
    methods: rollout.* and data.eval_limit; offline ones: eval.*), its length and eval cadence, and the value of
    its swept field. Best-of-n is one run for all its n. A name that is no registered command, or without a section
    in the sweep, is a one-line error."""
    from rlhfjax.commands import get
    from rlhfjax.errors import ConfigError

    out = []
    for method in sweep.methods:
        get(method)  # an unknown command: one line naming the known ones
        if method not in sweep:
            raise ConfigError(f"the sweep has no section for {method!r}", "add one (method_section) to its config")
        m = sweep[method]
        if method == "bon":
            if m.grid:
                out.append(("bon", None, [*_online(sweep, models), f"--config.bon.n={tuple(int(n) for n in m.grid)}",
                                          f"--config.bon.pool={sweep.bon.pool}",
                                          f"--config.bon.num_prompts={sweep.eval_prompts}"]))
            continue
        online = "rollout" in _load(m.config, [])
        flags = _online(sweep, models) if online else _offline(sweep, models)
        if m.steps:
            flags.append(f"--config.train.{'iterations' if online else 'steps'}={m.steps}")
        if m.eval_every:
            flags.append(f"--config.train.eval_every={m.eval_every}")
        if m.field:
            out += [(method, v, [*flags, f"--config.{m.field}={v}"]) for v in m.grid]
        else:
            out.append((method, DEFAULT, flags))
    return out


def _online(sweep, models):
    return [*models, f"--config.rollout.temperature={sweep.temperature}", "--config.rollout.top_p=1.0",
            f"--config.data.eval_limit={sweep.eval_prompts}", "--config.train.save_every=0"]


def _offline(sweep, models):
    return [*models, f"--config.eval.prompt_limit={sweep.eval_prompts}",
            f"--config.eval.temperature={sweep.temperature}", "--config.eval.top_p=1.0", "--config.train.save_every=0"]


def _analyse(results, early: float) -> tuple[dict, dict]:
    """(per-method summaries, per-run summaries), rewards relative to each run's start."""
    sweep = results["sweep"]
    from rlhfjax.analysis.kl_scaling import relative_to_start, summarise_method

    by_run = {}
    for r in results["rows"]:
        key = (r["method"], None if r["method"] == "bon" else r["value"])
        by_run.setdefault(key, []).append(r)
    pooled, per_run = {}, {}
    for (method, value), rows in by_run.items():
        rel = relative_to_start(sorted(rows, key=lambda r: r["step"]))
        pooled.setdefault(method, []).extend(rel)
        if value is not None:
            per_run[_label(sweep, method, value)] = summarise_method(rel, _form(method), early)
    methods = {m: summarise_method(pooled[m], _form(m), early) for m in sweep["methods"] if m in pooled}
    return methods, per_run


def _render(results, sweep) -> str:
    out = os.path.abspath(_path(sweep.out))
    _write_csv(results["rows"], os.path.join(out, "kl_scaling.csv"))
    methods, per_run = _analyse(results, float(sweep.early_sqrt_kl))
    results["summary"] = {"methods": methods, "runs": per_run}
    _study.save_results(out, results)
    from rlhfjax.analysis.kl_scaling import summary_table

    text = summary_table(methods)
    if sweep.doc:
        doc = _path(sweep.doc)
        os.makedirs(os.path.dirname(doc) or ".", exist_ok=True)
        png = os.path.splitext(doc)[0] + ".png"
        _plot(results, methods, png)
        _write_doc(results, methods, per_run, doc, os.path.basename(png), os.path.join(out, "kl_scaling.csv"))
    return text


def _write_csv(rows, path: str) -> None:
    from rlhfjax.analysis.kl_scaling import CURVE_COLUMNS

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _plot(results, methods: dict, path: str) -> None:
    plt = _study.pyplot()
    import numpy as np

    from rlhfjax.analysis.kl_scaling import ScalingFit

    cols = [m for m in results["sweep"]["methods"] if m in methods]
    fig, axes = plt.subplots(2, len(cols), figsize=(4.2 * len(cols), 7.2), squeeze=False, sharey="row")
    for j, method in enumerate(cols):
        rows = [r for r in results["rows"] if r["method"] == method]
        runs = [None] if method == "bon" else list(dict.fromkeys(r["value"] for r in rows))
        for i, value in enumerate(runs):
            ev = sorted((r for r in rows if value is None or r["value"] == value), key=lambda r: r["step"])
            x = [r["sqrt_kl"] for r in ev]
            label = "best-of-n" if value is None else _label(results["sweep"], method, value)
            for ax, key in zip(axes[:, j], ("gold", "proxy")):
                ax.plot(x, [r[key] - ev[0][key] for r in ev], "o-" if value is not None else "s--",
                        color=f"C{i}", ms=3, lw=1, label=label)
            if value is None:  # label each best-of-n point with its n
                for r in ev:
                    axes[0, j].annotate(f"{r['value']:g}", (r["sqrt_kl"], r["gold"] - ev[0]["gold"]), fontsize=7,
                                        textcoords="offset points", xytext=(3, -8))
        s = methods[method]
        g = s["gold_fit"]
        top = max(r["sqrt_kl"] for r in rows) if rows else 0.0
        grid = np.linspace(1e-3, max(top, 1e-2), 200)
        if math.isfinite(g["alpha"]):
            fit = ScalingFit(s["form"], g["alpha"], g["beta"], g["r2"])
            axes[0, j].plot(grid, fit(grid), "k-", lw=1.5, alpha=0.6,
                            label=f"Gao et al. fit: α={g['alpha']:.2f}, β={g['beta']:.2f}, R²={g['r2']:.2f}")
        p = s["proxy_early"]
        if math.isfinite(p["slope"]):
            e = np.linspace(0, s["early_sqrt_kl"], 20)
            axes[1, j].plot(e, p["intercept"] + p["slope"] * e, "k-", lw=1.5, alpha=0.6,
                            label=f"early linear fit: slope {p['slope']:.2f}, R²={p['r2']:.2f}")
            axes[1, j].axvline(s["early_sqrt_kl"], color="0.6", ls=":", lw=1)
        axes[0, j].set_title(method)
        for ax in axes[:, j]:
            ax.axhline(0, color="0.8", lw=0.8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        axes[1, j].set_xlabel("√KL(π ‖ π_SFT)  (nats^½)")
    axes[0, 0].set_ylabel("gold reward − initial")
    axes[1, 0].set_ylabel("proxy reward (RM) − initial")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _run_table(per_run: dict) -> str:
    from rlhfjax.analysis.kl_scaling import summary_table

    return summary_table(per_run).replace("| method |", "| run |", 1)


def _write_doc(results, methods, per_run, path: str, png: str, csv_path: str) -> None:
    from rlhfjax.analysis.kl_scaling import summary_table

    sw = results["sweep"]
    t = results["timings_s"]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) or "every run reused"
    la, lb = results["loadavg_start"], results["loadavg_end"]
    def origin(which):
        d = sw[f"{which}_dir"]
        if not d:
            return f"trained here (`{sw[which]['config']}`)"
        return "each method config's own" if d == BASE else f"reused from `{d}`"

    def vals(m):
        return ", ".join(_name(v) for v in sw[m]["grid"]) or "none"

    def bullet(m):
        s = sw[m]
        if m == "bon":
            what = (f"n ∈ {{{vals(m)}}}, from a pool of {s['pool']} samples per prompt, at the analytic KL "
                    "log n − (n−1)/n")
        else:
            what = f"`{s['field']}` ∈ {{{vals(m)}}}" if s["field"] else "its own settings"
        length = f", {s['steps']} steps/iterations" if s.get("steps") else ""
        cadence = f", eval every {s['eval_every']}" if s.get("eval_every") else ""
        extra = f" (+ `{'`, `'.join(s['extra'])}`)" if s["extra"] else ""
        return f"- {m} (`{s['config']}`){extra}: {what}{length}{cadence}."

    head = f"""# Reward vs √KL across methods on the toy lab

Generated by `scripts/kl_scaling.py`; the text after the generated part is by hand.

```
{results["command"]}
```

Machine: {results["machine"]}; float32. Total wall time {results["total_s"]:.0f} s; load average (1 min)
{la[0]:.2f} at the start, {lb[0]:.2f} at the end. Per run: {timing}.

Setup: the sweep is `experiments/kl_scaling_toy.py`; toy lab seed 0.
SFT policy: {origin('sft')}.
Reward model: {origin('rm')}.
Every method starts from the SFT policy, samples at temperature {sw["temperature"]} (top-p 1) and is evaluated on
the same {sw["eval_prompts"]} held-out prompts (fewer after dropping duplicates and a last partial batch) with the
same sampling keys. KL = Σ_t log π_T − log π_SFT,T on the eval samples (k1); proxy = the RM's score normalised to
mean 0, std 1 under the SFT policy; gold = the toy lab's gold reward. Rewards below are relative to each run's
first eval (the SFT policy itself; best-of-n: n = 1), so R(0) = 0 as Gao et al.'s forms assume.

{chr(10).join(bullet(m) for m in sw["methods"])}

DPO and the other offline methods train on the `mixed` annotator pool's comparisons (the RM's training pairs);
the RM only scores their sampling evals (proxy).

Per method, all its runs pooled (each run's start counted once): Gao et al.'s fit of Δgold vs d = √KL
(d(α − β log d) for the RL methods, d(α − βd) for best-of-n, least squares with R(0) = 0; fitted peak
= exp(α/β − 1) resp. α/(2β)); the ordinary least-squares line of Δproxy on √KL over the early range
(√KL ≤ the bound shown: `early_sqrt_kl`, or half the method's largest √KL when that is 0) with its R² and
number of points; and the observed eval with the highest gold reward.

{summary_table(methods)}

![gold and proxy reward vs √KL per method](png)

Per run (the same analysis on each run's own curve):

{_run_table(per_run)}

Every eval point: `{os.path.relpath(csv_path, ROOT) if csv_path.startswith(ROOT) else csv_path}` (columns method,
value, step, sqrt_kl, kl, proxy, gold; best-of-n: value = step = n).
""".replace("](png)", f"]({png})")
    _study.write_doc(path, head)


if __name__ == "__main__":
    sys.exit(main())
