"""scripts/demo_summary.py: the demo's closing screen reads the stage summaries right (synthetic runs with a
known gold curve)."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import demo_summary  # noqa: E402


def _write(run, stage, data):
    os.makedirs(run / stage, exist_ok=True)
    (run / stage / "summary.json").write_text(json.dumps(data))


@pytest.mark.parametrize("turns_over", [True, False])
def test_summary_fits_the_gold_curve_and_names_its_peak(tmp_path, turns_over):
    alpha, beta = (0.6, 0.4) if turns_over else (0.6, 0.05)
    ds = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    gold = [0.2 + (d * (alpha - beta * math.log(d)) if d > 0 else 0.0) for d in ds]
    evals = [{"eval/kl/seq_mean": d * d, "eval/reward/gold": g, "eval/reward/proxy": 0.3 * d} for d, g in zip(ds, gold)]
    _write(tmp_path, "sft", {"steps": 600, "seconds": 50.0, "final": {"eval/nll": 3.1, "reward/gold": 0.27}})
    _write(tmp_path, "rm", {"steps": 250, "seconds": 30.0, "final": {"eval/accuracy": 0.715, "eval/ece": 0.033,
                                                                       "eval/gold_agreement": 0.855}})
    _write(tmp_path, "ppo", {"iterations": 300, "seconds": 150.0, "evals": evals})
    text = demo_summary.summary(str(tmp_path), 301.0)
    assert "5 min 01 s" in text and "accuracy 0.715" in text and "agreement with gold" in text
    assert f"α {alpha:.3f}" in text and f"β {beta:.3f}" in text and "R² 1.00" in text
    peak = max(range(len(ds)), key=gold.__getitem__)
    assert f"{ds[peak]:>6.2f} {0.3 * ds[peak]:>+8.3f} {gold[peak]:>+8.3f}  <- gold peak" in text
    assert ("overoptimization: gold peaked" in text) == turns_over
    assert ("gold still rising" in text) == (not turns_over)
    assert len(text.splitlines()) <= 24  # one screen
