"""Labels from people (`iterate.labeller=external`): a hand-edited labels.jsonl is read like every data file (bad
lines and rows skipped and counted, file:line quoted), duplicates kept or dropped by the documented rule,
unlabelled tasks counted against `iterate.max_unlabelled_fraction`; and the normaliser's near-constant warning."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rlhfjax.commands import check_config
from rlhfjax.data.hh import join_transcript
from rlhfjax.data.labelling import export_tasks, read_jsonl
from rlhfjax.errors import ConfigError
from rlhfjax.harness.evaluation import fit_normaliser_on
from rlhfjax.objectives.core import fit_reward_normalisation
from rlhfjax.online import labelling_round

N_TASKS = 8
PROMPT = "\n\nHuman: q{}\n\nAssistant:"

# A hand-edited labels file: one line per case, numbered as an editor shows them (blank lines are no rows).
LABELS = [
    '{"id": "t0", "choice": "a"}',  # 1
    '{"id": "t1", "choice": "b"}',  # 2
    '{"id": "t2" "choice": "a"}',  # 3: broken JSON (a missing comma)
    '{"id": "t2", "choice": "b"}',  # 4
    '{"id": "t9", "choice": "a"}',  # 5: no such task
    '{"id": "t3", "choice": "c"}',  # 6: invalid choice
    '{"id": "t3", "choice": "a"}',  # 7
    '',  # 8
    '{"id": "t4", "choice": "tie"}',  # 9: labelled, but no comparison
    '{"id": "t0", "choice": "a"}',  # 10: duplicate, same choice: the first is kept
    '{"id": "t5", "choice": "a"}',  # 11
    '{"id": "t5", "choice": "b"}',  # 12: conflicting duplicate: both dropped, t5 is unlabelled
    '{"id": "t6", "choice": "b"}',  # 13
]  # t7: never labelled
WRITTEN = [("t0", "a"), ("t1", "b"), ("t2", "b"), ("t3", "a"), ("t6", "b")]  # in the labels' order


def _round(tmp_path, lines=LABELS, prefix=""):
    folder = str(tmp_path)
    export_tasks(os.path.join(folder, f"{prefix}tasks.jsonl"), [PROMPT.format(i) for i in range(N_TASKS)],
                 [f"A{i}" for i in range(N_TASKS)], [f"B{i}" for i in range(N_TASKS)],
                 ids=[f"t{i}" for i in range(N_TASKS)])
    if lines is not None:
        with open(os.path.join(folder, f"{prefix}labels.jsonl"), "w") as f:
            f.writelines(line + "\n" for line in lines)
    return folder


def _comparisons(folder, fraction, prefix=""):
    return labelling_round.comparisons(folder, prefix, labeller="external", pool="mixed", seed=0,
                                       max_unlabelled_fraction=fraction)


def _written(path):
    """(id, choice) of each comparison row, the choice read back from which response is `chosen`."""
    out = []
    for row in read_jsonl(path):
        i = int(row["id"][1:])
        a, b = join_transcript(PROMPT.format(i), f"A{i}"), join_transcript(PROMPT.format(i), f"B{i}")
        assert (row["chosen"], row["rejected"]) in ((a, b), (b, a)), row
        out.append((row["id"], "a" if row["chosen"] == a else "b"))
    return out


def test_bad_lines_duplicates_and_unlabelled_tasks_are_counted_and_reported(tmp_path, capsys):
    folder = _round(tmp_path)
    labels = labelling_round.read_labels(os.path.join(folder, "tasks.jsonl"), os.path.join(folder, "labels.jsonl"))
    report = labels.report
    assert report.rows == 12 and report.kept == 5
    assert dict(report.skipped) == {"invalid_json": 1, "unknown_id": 1, "bad_choice": 1, "tie": 1,
                                    "duplicate_id": 2, "conflicting_choice": 1}
    assert labels.choices == {"t0": "a", "t1": "b", "t2": "b", "t3": "a", "t4": "tie", "t6": "b"}
    assert labels.conflicting == ["t5"] and labels.unlabelled == ["t5", "t7"] and labels.unlabelled_fraction == 0.25

    assert _comparisons(folder, 0.25) == os.path.join(folder, "comparisons.jsonl")  # at the limit: goes on
    assert _written(os.path.join(folder, "comparisons.jsonl")) == WRITTEN
    out = capsys.readouterr().out
    path = os.path.join(folder, "labels.jsonl")
    assert f"labels: {path}: 12 rows, kept 5, skipped 7 (58.33%)\n" in out
    for reason, n in report.skipped.items():
        assert f"  skipped {reason}: {n}\n" in out
    assert f"  {path}:3: invalid JSON (Expecting ',' delimiter, column 13): {LABELS[2]!r}\n" in out  # file:line
    assert "  e.g. unknown_id: {'id': 't9', 'choice': 'a'}\n" in out
    assert "  e.g. bad_choice: {'id': 't3', 'choice': 'c'}\n" in out
    assert ("labels: 2 duplicate_id rows (tasks labelled more than once): 1 task with the same choice each time "
            "(the first label kept), 1 task with conflicting choices (all 2 of their labels dropped: t5)\n") in out
    assert ("labels: 2 of 8 tasks without a usable label (1 unlabelled, 1 conflicting; e.g. t5, t7): "
            "25.0% <= iterate.max_unlabelled_fraction 0.25: continuing with the 6 labelled (5 comparisons)\n") in out
    assert "Traceback" not in out


def test_the_round_waits_while_too_many_tasks_are_unlabelled(tmp_path, capsys):
    folder = _round(tmp_path, lines=None)
    assert _comparisons(folder, 1.0) is None  # no labels file: waits, as before
    assert capsys.readouterr().out == ""
    for fraction in (0.0, 1.0):  # an empty file (made before labelling began): waits, even when any may be missing
        _round(tmp_path, [])
        assert _comparisons(folder, fraction) is None
        assert "labels: 8 of 8 tasks without a usable label (8 unlabelled, 0 conflicting; e.g. t0, t1, t2, t3, t4)" \
            f": 100.0% {'>' if fraction < 1 else '<='} iterate.max_unlabelled_fraction {fraction:g}: waiting for " \
            "labels" in capsys.readouterr().out
    _round(tmp_path)  # 2 of 8 without a usable label
    for fraction in (0.0, 0.2, 0.249):
        assert _comparisons(folder, fraction) is None
        out = capsys.readouterr().out
        assert (f"labels: 2 of 8 tasks without a usable label (1 unlabelled, 1 conflicting; e.g. t5, t7): "
                f"25.0% > iterate.max_unlabelled_fraction {fraction:g}: waiting for labels") in out
        assert not os.path.exists(os.path.join(folder, "comparisons.jsonl"))  # nothing written: a re-run reads again
    # People fix the file: the conflict resolved (one of t5's labels removed) and t7 labelled.
    fixed = [line for line in LABELS if line != '{"id": "t5", "choice": "b"}'] + ['{"id": "t7", "choice": "b"}']
    _round(tmp_path, fixed)
    assert _comparisons(folder, 0.0) is not None
    assert _written(os.path.join(folder, "comparisons.jsonl")) == WRITTEN[:-1] + [("t5", "a"), ("t6", "b"),
                                                                                  ("t7", "b")]
    out = capsys.readouterr().out
    assert "without a usable label" not in out and "1 task with the same choice each time" in out
    assert "0 tasks with conflicting choices" in out
    os.remove(os.path.join(folder, "labels.jsonl"))  # the step is done: its output is reused, labels not read
    assert _comparisons(folder, 0.0) == os.path.join(folder, "comparisons.jsonl") and capsys.readouterr().out == ""


def test_a_clean_labels_file_reads_as_before(tmp_path, capsys):
    """Every task labelled once (the datasets fast path, no invalid line): nothing but the counts is reported."""
    lines = [json.dumps({"id": f"t{i}", "choice": "ab"[i % 2]}) for i in range(N_TASKS)]
    folder = _round(tmp_path, lines, prefix="eval_")
    assert _comparisons(folder, 0.0, prefix="eval_") == os.path.join(folder, "eval_comparisons.jsonl")
    assert _written(os.path.join(folder, "eval_comparisons.jsonl")) == [(f"t{i}", "ab"[i % 2]) for i in range(8)]
    out = capsys.readouterr().out
    assert out == f"labels: {os.path.join(folder, 'eval_labels.jsonl')}: 8 rows, kept 8, skipped 0 (0.00%)\n"


def test_max_unlabelled_fraction_is_checked_at_load():
    config = ml_collections.ConfigDict({"iterate": {"max_unlabelled_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"iterate.max_unlabelled_fraction=1.5 is out of range"):
        check_config(config)
    config.iterate.max_unlabelled_fraction = 0.05
    check_config(config)


def test_a_normaliser_fitted_on_near_constant_scores_warns_with_their_spread(capsys):
    flat = jnp.asarray(0.25 + 1e-4 * np.random.default_rng(0).standard_normal(64), jnp.float32)
    gain, bias = fit_normaliser_on(flat)
    expected = fit_reward_normalisation(flat)
    assert float(gain) == float(expected[0]) and float(bias) == float(expected[1]) and float(gain) > 1000
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("reward normaliser: warning: near-constant RM scores")
    s = np.asarray(flat)
    assert f"std {s.std():.3g}, min {s.min():.6g}, max {s.max():.6g} over 64" in out
    assert f"gain {float(gain):.4g}" in out
    spread = jnp.asarray(np.random.default_rng(1).standard_normal(64), jnp.float32)
    fit_normaliser_on(spread)
    assert capsys.readouterr().out == ""
