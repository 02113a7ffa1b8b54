"""Calibration (ECE) and OOD scores against analytic values."""

import math

import numpy as np
import pytest

from rlhfjax.analysis.calibration import pairwise_predictions, plot_reliability, reliability
from rlhfjax.analysis.ood import auroc, fit_gaussian, mahalanobis, relative_mahalanobis


def test_ece_is_near_zero_for_a_calibrated_predictor_and_large_otherwise():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = rng.uniform(size=p.size) < p  # outcomes drawn with exactly the predicted probability
    assert reliability(p, y).ece < 0.01
    # Overconfident: predicts 0.95/0.05 where the truth is 0.7/0.3 -> ECE = 0.25.
    p2 = np.where(rng.uniform(size=p.size) < 0.5, 0.95, 0.05)
    y2 = rng.uniform(size=p.size) < np.where(p2 > 0.5, 0.7, 0.3)
    assert reliability(p2, y2).ece == pytest.approx(0.25, abs=0.01)


def test_pairwise_calibration_of_a_bradley_terry_world():
    """Margins that are the true BT log-odds give a calibrated pairwise diagram."""
    rng = np.random.default_rng(1)
    true_margin = rng.normal(scale=2.0, size=100_000)
    chosen_first = rng.uniform(size=true_margin.size) < 1 / (1 + np.exp(-true_margin))
    margin = np.where(chosen_first, true_margin, -true_margin)  # oriented chosen - rejected
    p, y = pairwise_predictions(margin)
    assert reliability(p, y).ece < 0.01
    assert reliability(*pairwise_predictions(3 * margin)).ece > 0.1  # overconfident PM


def test_reliability_plot_is_written(tmp_path):
    rel = reliability(np.linspace(0, 1, 50), np.linspace(0, 1, 50) > 0.5)
    path = plot_reliability(rel, str(tmp_path / "rel.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _phi(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _Phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_auroc_of_shifted_gaussians_matches_the_analytic_value():
    rng = np.random.default_rng(2)
    delta = 1.0
    a, b = rng.normal(size=40_000), rng.normal(loc=delta, size=40_000)
    # Linear score: AUROC = P(X_out > X_in) = Phi(delta / sqrt 2).
    assert auroc(a, b) == pytest.approx(_Phi(delta / math.sqrt(2)), abs=0.01)
    # Mahalanobis (1-D): AUROC = P(|X_out| > |X_in|) = ∫ 2 phi(t) (1 - P(|X_out| <= t)) dt.
    fit = fit_gaussian(rng.normal(size=(50_000, 1)))
    t = np.linspace(0, 10, 20_001)
    integrand = [2 * _phi(x) * (1 - (_Phi(x - delta) - _Phi(-x - delta))) for x in t]
    analytic = float(np.trapezoid(integrand, t))
    got = auroc(mahalanobis(a[:, None], fit), mahalanobis(b[:, None], fit))
    assert got == pytest.approx(analytic, abs=0.01)


def test_auroc_ties_and_extremes():
    assert auroc([0, 0], [0, 0]) == 0.5
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0


def test_mahalanobis_uses_the_covariance_and_relative_removes_the_diagonal_part():
    rng = np.random.default_rng(3)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    x = rng.multivariate_normal([0, 0], cov, size=100_000)
    fit = fit_gaussian(x)
    probe = np.array([[1.0, -1.0], [1.0, 1.0]])  # against vs along the correlation
    d = mahalanobis(probe, fit)
    want = np.einsum("nd,de,ne->n", probe, np.linalg.inv(cov), probe)
    np.testing.assert_allclose(d, want, rtol=0.03)
    rel = relative_mahalanobis(probe, fit)
    np.testing.assert_allclose(rel, want - (probe ** 2).sum(1), rtol=0.05, atol=0.05)
    assert rel[0] > 0 > rel[1]  # off-correlation points are what the relative score flags
