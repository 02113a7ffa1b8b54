"""The reward vs √KL sweep: its analysis functions against numpy / analytic values, and
scripts/kl_scaling.py end to end on the :smoke sweep (random tiny models, 2 iterations per run)."""

import csv
import json
import math
import os
import sys

import numpy as np
import pytest

from rlhfjax.analysis.kl_scaling import (eval_curve, linear_fit, relative_to_start, summarise_method,
                                         summary_table)

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_linear_fit_matches_numpy_and_ignores_points_past_the_bound():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 30)
    y = 0.2 + 1.5 * x + rng.normal(scale=0.05, size=x.size)
    # Past x = 1 the curve bends away; with x_max = 1 those points must not move the fit.
    x_all = np.concatenate([x, np.linspace(1.1, 3, 10)])
    y_all = np.concatenate([y, 5.0 - 3.0 * np.linspace(1.1, 3, 10)])
    fit = linear_fit(x_all, y_all, x_max=1.0)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.n == 30
    assert fit.slope == pytest.approx(slope, rel=1e-9) and fit.intercept == pytest.approx(intercept, rel=1e-9)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)  # simple regression: R² = r²
    assert 1.4 < fit.slope < 1.6
    whole = linear_fit(x_all, y_all)
    assert whole.n == 40 and whole.r2 < fit.r2
    exact = linear_fit([0, 1, 2, np.nan], [1, 3, 5, 100])  # NaN rows dropped; an exact line has R² = 1
    assert (exact.slope, exact.intercept, exact.r2, exact.n) == pytest.approx((2.0, 1.0, 1.0, 3))


def test_linear_fit_with_one_distinct_x_is_nan_not_an_error():
    fit = linear_fit([0.0, 0.0, 2.0], [1.0, 2.0, 3.0], x_max=1.0)
    assert fit.n == 2 and math.isnan(fit.slope) and math.isnan(fit.r2)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_eval_curve_reads_eval_records_and_keeps_the_last_of_a_repeated_step(tmp_path):
    recs = [{"step": 0, "eval/kl/seq_mean": 0.0, "eval/reward/proxy": 0.1, "eval/reward/gold": 0.5},
            {"step": 1, "kl/seq_mean": 9.0, "reward/proxy": 9.0, "reward/gold": 9.0},  # a training record
            {"step": 2, "eval/kl/seq_mean": 2.25, "eval/reward/proxy": 0.7, "eval/reward/gold": 0.6},
            {"step": 4, "eval/kl/seq_mean": -0.01, "eval/reward/gold": 0.4},  # no RM: proxy NaN; KL < 0: √KL 0
            {"step": 2, "eval/kl/seq_mean": 4.0, "eval/reward/proxy": 0.8, "eval/reward/gold": 0.65}]  # resumed
    _write(tmp_path / "metrics.jsonl", recs)
    rows = eval_curve(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert rows[1] == {"step": 2, "kl": 4.0, "sqrt_kl": 2.0, "proxy": 0.8, "gold": 0.65}
    assert rows[2]["sqrt_kl"] == 0.0 and rows[2]["kl"] == -0.01 and math.isnan(rows[2]["proxy"])
    bon = eval_curve(str(tmp_path / "metrics.jsonl"), prefix="")  # best-of-n records carry no prefix
    assert [(r["step"], r["sqrt_kl"]) for r in bon] == [(1, 3.0)]


def test_relative_to_start_subtracts_the_first_row():
    rows = [{"step": 0, "proxy": 0.5, "gold": 1.0}, {"step": 5, "proxy": 0.8, "gold": 0.9}]
    rel = relative_to_start(rows)
    assert [r["start"] for r in rel] == [True, False] and rel[1]["step"] == 5
    assert [r["dproxy"] for r in rel] == pytest.approx([0.0, 0.3])
    assert [r["dgold"] for r in rel] == pytest.approx([0.0, -0.1])
    assert relative_to_start([]) == []


def _run(value, ds, gold, proxy, start_gold=0.4, start_proxy=-0.1):
    """One run's rows: its start at d = 0, then points at `ds` with the given rewards relative to start."""
    rows = [{"step": 0, "sqrt_kl": 0.0, "proxy": start_proxy, "gold": start_gold, "value": value}]
    rows += [{"step": 10 * (i + 1), "sqrt_kl": float(d), "proxy": start_proxy + p, "gold": start_gold + g,
              "value": value} for i, (d, g, p) in enumerate(zip(ds, gold, proxy))]
    return relative_to_start(rows)


def test_summarise_method_recovers_the_gao_form_the_early_slope_and_the_peak():
    alpha, beta = 0.9, 0.5  # RL form d(α − β log d): peak at exp(α/β − 1) ≈ 2.23
    a, b = np.linspace(0.2, 1.6, 8), np.linspace(0.3, 3.5, 9)  # two runs, pooled
    g = lambda d: d * (alpha - beta * np.log(d))  # noqa: E731
    proxy = lambda d: np.where(d <= 1.0, 0.7 * d, 0.7 + 0.2 * (d - 1.0))  # linear early, then bends  # noqa: E731
    rows = _run(0.01, a, g(a), proxy(a)) + _run(0.1, b, g(b), proxy(b))
    s = summarise_method(rows, "rl", early_sqrt_kl=1.0)
    assert s["points"] == 1 + 8 + 9  # the two starts (the same policy) count once
    assert s["gold_fit"]["alpha"] == pytest.approx(alpha) and s["gold_fit"]["beta"] == pytest.approx(beta)
    assert s["gold_fit"]["r2"] == pytest.approx(1.0)
    assert s["gold_fit"]["peak_sqrt_kl"] == pytest.approx(np.exp(alpha / beta - 1))
    early_d = np.concatenate([[0.0], a[a <= 1], b[b <= 1]])
    assert s["proxy_early"]["n"] == early_d.size
    assert s["proxy_early"]["slope"] == pytest.approx(0.7) and s["proxy_early"]["r2"] == pytest.approx(1.0)
    all_d = np.concatenate([[0.0], a, b])
    ref = linear_fit(all_d, proxy(all_d))
    assert s["proxy_all"]["n"] == 18 and s["proxy_all"]["slope"] == pytest.approx(ref.slope)
    assert s["proxy_all"]["r2"] == pytest.approx(ref.r2) and ref.r2 < 0.99  # the bend past d = 1 shows here
    best = all_d[np.argmax(g(np.maximum(all_d, 1e-12)))]
    assert s["gold_peak"]["sqrt_kl"] == pytest.approx(best) and s["gold_peak"]["value"] == 0.1
    assert s["max_sqrt_kl"] == pytest.approx(3.5)
    # early_sqrt_kl = 0: the early range is half the largest √KL (here 1.75: the bend at 1 is inside it).
    half = summarise_method(rows, "rl", early_sqrt_kl=0.0)
    assert half["early_sqrt_kl"] == pytest.approx(1.75)
    inside = all_d <= 1.75
    ref = linear_fit(all_d[inside], proxy(all_d)[inside])
    assert half["proxy_early"]["slope"] == pytest.approx(ref.slope) and half["proxy_early"]["r2"] < 1.0


def test_summarise_method_bon_form_and_the_table():
    n = np.array([2, 4, 8, 16, 32, 64])
    d = np.sqrt(np.log(n) - (n - 1) / n)
    alpha, beta = 0.6, 0.2  # bon form d(α − βd): peak at α/(2β) = 1.5
    rows = [{"step": 1, "value": 1, "sqrt_kl": 0.0, "proxy": 0.0, "gold": 0.47}]
    rows += [{"step": int(k), "value": int(k), "sqrt_kl": float(x), "proxy": 0.8 * x,
              "gold": 0.47 + x * (alpha - beta * x)} for k, x in zip(n, d)]
    bon = summarise_method(relative_to_start(rows), "bon", early_sqrt_kl=1.0)
    assert bon["gold_fit"]["alpha"] == pytest.approx(alpha) and bon["gold_fit"]["beta"] == pytest.approx(beta)
    assert bon["gold_fit"]["peak_sqrt_kl"] == pytest.approx(1.5)
    assert bon["gold_peak"]["value"] == int(n[np.argmax(d * (alpha - beta * d))])
    empty = summarise_method(relative_to_start(rows[:1]), "rl")  # nothing past the start: NaNs, no error
    assert math.isnan(empty["gold_fit"]["alpha"]) and math.isnan(empty["proxy_early"]["slope"])
    lines = summary_table({"bon": bon, "dpo": empty}).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| bon | 7 | d(α − βd) | 0.600 | 0.200 | 1.00 | 1.50 |")
    assert f"n = {bon['gold_peak']['value']}" in lines[2]
    assert lines[3].startswith("| dpo | 1 | d(α − β log d) | nan")


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sweep_script():
    """scripts/kl_scaling.py as a module, run in this process (no second jax start-up), with XLA's optimisation
    passes off while it runs: they are most of a tiny run's compile time, and smoke numbers mean nothing."""
    import importlib.util

    import jax

    sys.path.insert(0, os.path.join(ROOT, "scripts"))  # for its `import _study`
    spec = importlib.util.spec_from_file_location("kl_scaling_script", os.path.join(ROOT, "scripts", "kl_scaling.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield module
    jax.config.update("jax_disable_most_optimizations", before)
    sys.path.remove(os.path.join(ROOT, "scripts"))


@pytest.mark.slow
def test_sweep_script_smoke_end_to_end(tmp_path, sweep_script, capsys):
    """The :smoke sweep: a CSV row per eval of every (method, value), the PNG and the markdown summary; a
    re-run reuses every finished run. (No persistent compilation cache: it would outlive this test.)"""
    out, doc = tmp_path / "out", tmp_path / "docs" / "kls.md"
    config = os.path.join(ROOT, "experiments", "kl_scaling_toy.py:smoke")
    argv = ["--config", config, f"--config.out={out}", f"--config.doc={doc}", "--config.compilation_cache=false"]
    assert sweep_script.main(argv) == 0
    from rlhfjax.config import load_config

    sweep = load_config(config)
    rows = _csv(out / "kl_scaling.csv")
    assert list(rows[0]) == ["method", "value", "step", "sqrt_kl", "kl", "proxy", "gold"]
    runs = {(r["method"], float(r["value"])) for r in rows}
    expected = {(m, v) for m in ("ppo", "superhf", "dpo", "bon") for v in sweep[m].grid}
    assert runs == expected
    iters = {m: sweep[m].steps for m in ("ppo", "superhf", "dpo")}
    for method, value in sorted(expected):  # the smoke sweep evaluates every step: 0, 1, ..., the last
        steps = [int(r["step"]) for r in rows if (r["method"], float(r["value"])) == (method, value)]
        assert method == "bon" or steps == list(range(iters[method] + 1)), (method, value, steps)
    bon = [r for r in rows if r["method"] == "bon"]
    assert [float(r["kl"]) for r in bon] == pytest.approx([math.log(n) - (n - 1) / n for n in sweep.bon.grid],
                                                          abs=1e-6)
    for r in rows:
        assert float(r["sqrt_kl"]) == pytest.approx(math.sqrt(max(float(r["kl"]), 0.0)), abs=1e-6)
    assert (doc.parent / "kls.png").read_bytes()[:4] == b"\x89PNG"
    text = doc.read_text()
    for method in ("ppo", "superhf", "bon", "dpo"):
        assert any(line.startswith(f"| {method} | ") for line in text.splitlines()), method
    assert "kl_scaling_toy.py:smoke" in text and "Machine:" in text and "<!-- end of generated part -->" in text
    results = json.loads((out / "results.json").read_text())
    # every run ran (the smoke sweep trains no SFT/RM): one per PPO/SuperHF/DPO value, one best-of-n
    assert len(results["timings_s"]) == len(sweep.ppo.grid) + len(sweep.superhf.grid) + len(sweep.dpo.grid) + 1
    # A re-run reuses every finished run, rewrites the same CSV and keeps the prose below the marker.
    doc.write_text(text + "\nprose by hand\n")
    capsys.readouterr()
    assert sweep_script.main(argv) == 0
    assert "== " not in capsys.readouterr().out  # Stages prints "== <run>: <s>" for each run it runs
    # ... and keeps the wall times the first invocation measured (scripts/_study.Stages.record)
    assert json.loads((out / "results.json").read_text())["timings_s"] == results["timings_s"]
    assert _csv(out / "kl_scaling.csv") == rows
    assert doc.read_text().endswith("\nprose by hand\n")


def test_any_registered_method_joins_the_sweep_by_name(sweep_script):
    """`methods` may name every method of the toy lab's reward-vs-√KL axes: one run of its experiment file's own
    settings (online ones sample and evaluate through rollout.* / data.eval_limit, offline ones through eval.*),
    or one run per value of a swept field; an unknown name is a one-line error."""
    from rlhfjax.config import load_config
    from rlhfjax.errors import ConfigError

    config = os.path.join(ROOT, "experiments", "kl_scaling_toy.py")
    more = load_config(config).methods + sweep_script_more()
    sweep = load_config(config, [f"--config.methods={more}", "--config.grpo.field=grpo.kl_coef",
                                 "--config.grpo.grid=(0.01, 0.04)"])
    jobs = sweep_script.jobs(sweep, ["--config.data.toylab_dir=/lab"])
    names = [(m, v) for m, v, _ in jobs]
    assert list(dict.fromkeys(m for m, _ in names)) == list(more)
    assert [v for m, v in names if m == "grpo"] == [0.01, 0.04]
    assert [v for m, v in names if m == "ppo"] == list(sweep.ppo.grid) and [v for m, v in names if m == "bon"] == [None]
    for method, value, flags in jobs:
        online = "rollout" in load_config(os.path.join(ROOT, "experiments", f"toylab_{method}.py"))
        assert ("--config.rollout.temperature=0.7" in flags) == online, method
        assert ("--config.eval.temperature=0.7" in flags) == (not online), method
        if method in sweep_script_more() and method != "grpo":
            assert value == "default" and not any(f.startswith("--config.train.steps") for f in flags)
        load_config(os.path.join(ROOT, sweep[method].config), flags[1:])  # every override names a real field
    with pytest.raises(ConfigError, match="unknown command 'ppo2'"):
        sweep_script.jobs(load_config(config, ["--config.methods=(ppo2,)"]), [])


def sweep_script_more():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kls_config", os.path.join(ROOT, "experiments", "kl_scaling_toy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.MORE_METHODS)


def test_objectives_table_reports_each_methods_peak_against_the_eval_noise(tmp_path):
    """scripts/objectives_table.py's table from a sweep's results: the observed gold peak relative to the first eval,
    the √KL and step there, the last eval, and the SE of the SFT policy's eval as the noise yardstick."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import objectives_table
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    from rlhfjax.config import load_config

    sweep = load_config(os.path.join(ROOT, "experiments", "kl_scaling_toy.py:objectives"))
    assert set(sweep.methods) >= {"ppo", "dpo", "bon", "kto", "orpo", "simpo", "online_dpo", "remax", "reinforce_pp"}
    sweep.methods = ("grpo", "bon")
    gold = {"grpo": [0.40, 0.52, 0.61, 0.55], "bon": [0.40, 0.47, 0.50]}
    rows = [{"method": "grpo", "value": "default", "step": 10 * i, "sqrt_kl": 0.5 * i, "proxy": 0.0, "gold": g}
            for i, g in enumerate(gold["grpo"])]
    rows += [{"method": "bon", "value": n, "step": n, "sqrt_kl": 0.3 * i, "proxy": 0.0, "gold": g}
             for i, (n, g) in enumerate(zip((1, 4, 16), gold["bon"]))]
    run = tmp_path / "grpo" / "default"
    run.mkdir(parents=True)
    _write(run / "metrics.jsonl", [{"step": 0, "eval/reward/gold": 0.4, "eval/reward/gold_se": 0.0123}])
    results = {"sweep": sweep.to_dict(), "rows": rows, "machine": "test", "total_s": 5.0,
               "timings_s": {"grpo default": 3.0}}
    text = objectives_table.render(results, str(tmp_path), "python scripts/objectives_table.py")
    line = {ln.split(" | ")[0][2:]: ln for ln in text.splitlines() if ln.startswith("| grpo") or ln.startswith("| bon")}
    cells = [c.strip() for c in line["grpo"].strip("|").split("|")]
    assert cells[0] == "grpo" and "DeepSeekMath" in cells[2] and "group_size=8" in cells[3] and "lr=5e-05" in cells[3]
    assert cells[4] == "+0.210 (± 0.012)" and cells[5] == "1.00 (step 20)" and cells[6] == "+0.150, 1.50 (step 30)"
    assert cells[7] == "3 s"
    bon = [c.strip() for c in line["bon"].strip("|").split("|")]
    assert bon[4] == "+0.100" and bon[5] == "0.60 (n = 16)" and bon[7] == "reused"
    assert "standard error of 0.012 (" in text  # one value when every run's SE rounds the same
