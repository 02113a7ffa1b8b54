"""Reward-vs-√KL fits recover known parameters; best-of-n KL formula; plot and metrics reading."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rlhfjax.analysis.kl_scaling import bon_kl, fit_scaling, plot_reward_vs_sqrt_kl, read_curve


@pytest.mark.parametrize("form,alpha,beta", [("bon", 1.3, 0.2), ("rl", 0.8, 0.3)])
def test_fit_recovers_parameters(form, alpha, beta):
    d = np.linspace(0.1, 4.0, 40)
    clean = d * (alpha - beta * (d if form == "bon" else np.log(d)))
    noisy = clean + np.random.default_rng(0).normal(scale=0.01, size=d.size)
    fit = fit_scaling(d, noisy, form)
    assert fit.alpha == pytest.approx(alpha, abs=0.02) and fit.beta == pytest.approx(beta, abs=0.02)
    assert fit.r2 > 0.99
    peak = alpha / (2 * beta) if form == "bon" else np.exp(alpha / beta - 1)
    assert fit.peak_d == pytest.approx(peak, rel=0.05)


def test_best_of_n_kl():
    assert bon_kl(1) == pytest.approx(0.0)
    assert bon_kl(16) == pytest.approx(np.log(16) - 15 / 16)
    # Monte Carlo: exact KL of best-of-n over a uniform categorical with distinct rewards, large support.
    m, n = 10_000, 4
    ranks = np.arange(1, m + 1) / m
    p_bon = ranks ** n - (ranks - 1 / m) ** n  # P(max of n draws == item of rank i)
    exact = np.sum(p_bon * np.log(p_bon * m))
    assert exact == pytest.approx(bon_kl(n), abs=1e-3)


def test_read_curve_and_plot(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = [{"step": i, "kl/seq_mean": 0.5 * i, "reward/proxy": 0.1 * i, "reward/gold": 0.1 * i - 0.01 * i * i}
            for i in range(1, 8)] + [{"step": 8, "loss": 1.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    curve = read_curve(str(path))
    assert list(curve["step"]) == list(range(1, 8))
    out = plot_reward_vs_sqrt_kl(curve, str(tmp_path / "kl.png"))
    assert open(out, "rb").read(4) == b"\x89PNG"


def test_report_prints_a_table_relative_to_the_first_iteration(tmp_path):
    from rlhfjax.analysis.report import report

    recs = [{"step": i, "kl/seq_mean": 0.3 * i, "reward/proxy": 1.0 + 0.2 * i, "reward/gold": 2.0 + 0.05 * i}
            for i in range(1, 21)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = report(str(tmp_path), rows=5)
    lines = text.splitlines()
    assert lines[2].split()[:2] == ["1", "0.300"] and lines[2].split()[4] == "+0.000"
    last = lines[6].split()
    assert last[0] == "20" and float(last[4]) == pytest.approx(0.2 * 19) and float(last[6]) == pytest.approx(0.05 * 19)
    assert (tmp_path / "reward_vs_sqrt_kl.png").exists()


def test_report_without_gold_reports_proxy_alone(tmp_path):
    """HH runs log no reward/gold: the report falls back to proxy vs √KL instead of failing."""
    from rlhfjax.analysis.report import report

    recs = [{"step": i, "kl/seq_mean": 0.25 * i * i, "reward/proxy": 0.5 - 0.1 * i} for i in range(1, 5)]
    recs.insert(2, {"step": 2, "eval/reward/proxy": 9.0, "eval/kl/seq_mean": 9.0})  # eval rows are not curve rows
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    lines = report(str(tmp_path), rows=10).splitlines()
    assert lines[0].split() == ["iter", "KL", "√KL", "proxy", "Δproxy"]
    assert [line.split() for line in lines[2:6]] == [
        ["1", "0.250", "0.500", "0.400", "+0.000"],
        ["2", "1.000", "1.000", "0.300", "-0.100"],
        ["3", "2.250", "1.500", "0.200", "-0.200"],
        ["4", "4.000", "2.000", "0.100", "-0.300"]]
    # Δproxy = -0.2 (d - 0.5) is not of the form d(α − β log d); only check that one fit line is proxy's.
    fits = [line for line in lines if "Δreward" in line]
    assert len(fits) == 1 and fits[0].startswith("reward/proxy:")
    assert (tmp_path / "reward_vs_sqrt_kl.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_any_curve_records_names_the_file(tmp_path):
    from rlhfjax.analysis.report import report

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl has no records"):
        report(str(tmp_path))


def test_report_on_a_missing_run_directory_is_one_line_and_status_2(tmp_path):
    missing = tmp_path / "no_such_run"
    r = subprocess.run([sys.executable, "-m", "rlhfjax.analysis.report", str(missing)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"rlhfjax: error: no run directory '{missing}' (pass the --workdir of a ppo run)\n"


def test_report_main_on_a_directory_without_metrics_or_curve_returns_2(tmp_path, capsys):
    from rlhfjax.analysis.report import main

    assert main([str(tmp_path)]) == 2  # exists, no metrics.jsonl
    assert capsys.readouterr().err == (f"rlhfjax: error: '{tmp_path}' has no metrics.jsonl "
                                       "(pass the --workdir of a ppo run)\n")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")  # e.g. an sft run
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhfjax: error: ") and "has no records with kl/seq_mean" in err and err.count("\n") == 1
