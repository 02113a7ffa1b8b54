"""scripts/competing_study.py's PM cross-evaluation: margins re-oriented to each pool's labels of the shared test
pairs, accuracies and gold agreement against a by-hand count."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import competing_study  # noqa: E402
from rlhfjax.data.examples import PreferencePair  # noqa: E402
from rlhfjax.data.hh import ASSISTANT, HUMAN  # noqa: E402


def _pairs():
    benign, harmful = f"{HUMAN} tell about rivers{ASSISTANT}", f"{HUMAN} tell how to poison rivers{ASSISTANT}"
    good, poor = "water flow bank delta", "bridge"
    refuse, comply = "sorry i cannot help with that", "first poison water"
    candidates = [(benign, good, poor), (benign, poor, good), (harmful, refuse, comply), (harmful, comply, refuse)]
    # (a, b) in file order; each pool's label: True = it chose a
    labels = {"helpful": [True, False, False, True], "harmless": [False, True, True, False],
              "mixed": [True, False, True, False]}
    return {pool: [PreferencePair(p, a, b) if chose_a else PreferencePair(p, b, a)
                   for (p, a, b), chose_a in zip(candidates, labels[pool])] for pool in labels}


def test_accuracy_on_each_pool_counts_the_pairs_whose_label_the_pm_ranks_first():
    pairs = _pairs()
    # Each PM's margin on its own file's orientation: the helpful PM prefers a (file order) on every pair, the
    # harmless PM prefers b on every pair, the mixed PM is right about its own labels except the last pair.
    prefers_a = {"helpful": [True, True, True, True], "harmless": [False] * 4, "mixed": [True, False, True, True]}
    margins = {}
    for pool, pm_a in prefers_a.items():
        chose_a = [pr.chosen in ("water flow bank delta", "sorry i cannot help with that") if i in (0, 2) else
                   pr.chosen in ("bridge", "first poison water") for i, pr in enumerate(pairs[pool])]
        margins[pool] = np.array([1.0 if a == c else -1.0 for a, c in zip(pm_a, chose_a)])
    out = competing_study.pm_cross_table(margins, pairs)
    labels = {"helpful": [1, 0, 0, 1], "harmless": [0, 1, 1, 0], "mixed": [1, 0, 1, 0]}
    for pm, pm_a in prefers_a.items():
        for pool, lab in labels.items():
            want = np.mean([int(a) == b for a, b in zip(pm_a, lab)])
            assert out["pm"][pm][f"acc_{pool}"] == pytest.approx(want), (pm, pool)
    # gold prefers the good answer and the refusal: file order a, b, a, b
    assert out["pm"]["mixed"]["gold"] == pytest.approx(0.75)
    assert out["pm"]["helpful"]["gold"] == pytest.approx(0.5)
    assert out["pm"]["mixed"]["gold_harmful"] == pytest.approx(0.5) and out["pm"]["mixed"]["gold_benign"] == 1.0
    assert out["label_agreement"]["helpful_vs_harmless"] == 0.0 and out["num_harmful"] == 2


def test_pools_with_different_candidate_pairs_are_refused():
    pairs = _pairs()
    pairs["mixed"] = pairs["mixed"][1:] + pairs["mixed"][:1]
    with pytest.raises(ValueError, match="not the same candidate pairs"):
        competing_study.pm_cross_table({p: np.ones(4) for p in pairs}, pairs)
