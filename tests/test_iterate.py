"""`rlhfjax iterate`: rounds of comparisons → labels → PM → RL, resumable, with the external-labelling
round trip; and the pieces it is built from (pair sampling, PM metrics, a separate reference role)."""

import json
import os

import numpy as np
import pytest

from rlhfjax import parallel
from rlhfjax.analysis.calibration import pair_metrics
from rlhfjax.cli import main
from rlhfjax.config import load_config
from rlhfjax.data.labelling import read_jsonl
from rlhfjax.data.toylab import annotators
from rlhfjax.data.toylab.annotators import POOLS, label_tasks
from rlhfjax.errors import BadInputError
from rlhfjax.online import comparisons
from rlhfjax.recipes import iterate

EXP = os.path.join(os.path.dirname(__file__), "..", "experiments", "toylab_iterate.py")


def _config(lab, *extra):
    return load_config(f"{EXP}:smoke", [f"--config.data.toylab_dir={lab}", *extra])


def _files(root):
    """{relative path: mtime_ns} of everything under the round and final directories."""
    out = {}
    for base, _, files in os.walk(root):
        rel = os.path.relpath(base, root)
        if rel.startswith(("round_", "final")):
            out.update({os.path.join(rel, f): os.stat(os.path.join(base, f)).st_mtime_ns for f in files})
    return out


def _lines(path):
    return len(read_jsonl(path))


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    """The :smoke variant through the CLI, on a fresh toy lab (test_experiments leaves this file to us)."""
    root = tmp_path_factory.mktemp("iterate")
    lab, work = str(root / "lab"), str(root / "run")
    extra = [f"--config.data.toylab_dir={lab}", "--config.iterate.earlier_policy_frac=0.5"]
    assert main(["iterate", "--config", f"{EXP}:smoke", "--workdir", work, *extra]) == 0
    with open(os.path.join(work, "summary.json")) as f:
        summary = json.load(f)
    return load_config(f"{EXP}:smoke", extra), lab, work, summary


@pytest.mark.slow
def test_two_rounds_make_two_pms_two_policies_and_exactly_the_labels_asked_for(two_rounds):
    cfg, _, work, summary = two_rounds
    n, rounds = cfg.iterate.comparisons, cfg.iterate.rounds
    assert rounds == 2 and summary["rounds_done"] == 2
    for r in range(rounds):
        for model in ("pm", "rl"):
            d = os.path.join(work, f"round_{r}", model, "model")
            assert all(os.path.exists(os.path.join(d, f)) for f in ("config.json", "model.safetensors"))
        assert _lines(os.path.join(work, f"round_{r}", "comparisons.jsonl")) == n
        assert _lines(os.path.join(work, f"round_{r}", "eval_comparisons.jsonl")) == cfg.iterate.eval_comparisons
        # the PM of round r trained on every comparison so far, and only on those
        assert _lines(os.path.join(work, f"round_{r}", "pm_data", "train.jsonl")) == n * (r + 1)
    assert summary["labels"] == summary["label_budget"] == n * rounds
    assert [rec["labels/total"] for rec in summary["records"]] == [n, 2 * n]
    # round 1's policy is round 0's export, its KL anchor stays π_0, its reward model is round 1's PM
    rl1 = json.load(open(os.path.join(work, "round_1", "rl", "config.json")))
    assert rl1["policy"]["init_from"] == os.path.join(work, "round_0", "rl", "model")
    assert rl1["reference"]["init_from"] == os.path.join(work, "initial_policy")
    assert rl1["reward"]["init_from"] == os.path.join(work, "round_1", "pm", "model")
    # ... and it really is π_0: round 1 starts where round 0 ended, at the same KL (0 if it were π_1)
    evals = [[r for r in read_jsonl(os.path.join(work, f"round_{k}", "rl", "metrics.jsonl")) if "eval/kl/seq_mean" in r]
             for k in (0, 1)]
    assert evals[1][0]["step"] == 0 and evals[1][0]["eval/kl/seq_mean"] != 0
    assert evals[1][0]["eval/kl/seq_mean"] == pytest.approx(evals[0][-1]["eval/kl/seq_mean"], abs=1e-5)
    pm1 = json.load(open(os.path.join(work, "round_1", "pm", "config.json")))
    assert pm1["model"]["init_from"] == os.path.join(work, "round_0", "pm", "model")  # pm_init=previous
    # earlier policies are mixed in from round 1 on (π_0 is the only earlier one)
    assert summary["records"][0]["pairs/from_earlier"] == 0 < summary["records"][1]["pairs/from_earlier"]
    # every PM is scored on the final policy's held-out pairs
    assert [p["round"] for p in summary["final"]["pm"]] == [0, 1]
    assert os.path.exists(os.path.join(work, "reward_vs_sqrt_kl.png"))
    assert _lines(os.path.join(work, "metrics.jsonl")) == rounds


def test_pm_metrics_of_a_round_match_the_rm_runs_own_eval(two_rounds):
    """The recipe re-scores the PM on the round's held-out pairs; the rm run evaluated the same pairs."""
    _, _, work, summary = two_rounds
    for r, rec in enumerate(summary["records"]):
        rm_final = json.load(open(os.path.join(work, f"round_{r}", "pm", "summary.json")))["final"]
        assert rec["pm/accuracy"] == pytest.approx(rm_final["eval/accuracy"], abs=1e-6)


def test_a_rerun_does_no_work(two_rounds, monkeypatch):
    cfg, _, work, summary = two_rounds
    before = _files(work)

    def refuse(*a, **k):
        raise AssertionError("a finished run should not sample, train or label again")

    from rlhfjax.recipes import ppo, rm

    monkeypatch.setattr(rm, "run", refuse)
    monkeypatch.setattr(ppo, "run", refuse)
    monkeypatch.setattr(comparisons, "sample_pairs", refuse)
    monkeypatch.setattr(annotators, "label_tasks", refuse)
    again = iterate.run(cfg, work)
    assert _files(work) == before
    assert again["records"] == summary["records"] and again["final"] == summary["final"]


def test_external_labels_round_trip(tmp_path, two_rounds):
    """`labeller=external` stops at the tasks; labels written by someone else (here the simulated pool,
    standing in for people) let the same command continue; ties are dropped and counted."""
    _, lab, _, _ = two_rounds
    cfg = _config(lab, "--config.iterate.labeller=external", "--config.iterate.rounds=1",
                  "--config.methods.ppo.train.iterations=1")
    work = str(tmp_path / "run")
    mesh = None  # the default mesh, as the CLI run above: its compiled functions are reused
    first = iterate.run(cfg, work, mesh)
    r0 = os.path.join(work, "round_0")
    assert first["rounds_done"] == 0 and first["waiting_for_labels"] == r0
    assert not os.path.exists(os.path.join(r0, "pm"))
    tasks = read_jsonl(os.path.join(r0, "tasks.jsonl"))
    assert set(tasks[0]) == {"id", "prompt", "response_a", "response_b"}  # nothing that tells a labeller the source
    label_tasks(os.path.join(r0, "tasks.jsonl"), os.path.join(r0, "labels.jsonl"), POOLS["mixed"], seed=1)
    label_tasks(os.path.join(r0, "eval_tasks.jsonl"), os.path.join(r0, "eval_labels.jsonl"), POOLS["mixed"], seed=2)
    labels = read_jsonl(os.path.join(r0, "labels.jsonl"))
    labels[0]["choice"] = "tie"
    with open(os.path.join(r0, "labels.jsonl"), "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in labels)
    second = iterate.run(cfg, work, mesh)
    assert second["rounds_done"] == 1 and second["waiting_for_labels"] == os.path.join(work, "final")
    assert second["labels"] == len(tasks) - 1  # the tie is not a comparison
    final = os.path.join(work, "final")
    label_tasks(os.path.join(final, "eval_tasks.jsonl"), os.path.join(final, "eval_labels.jsonl"), POOLS["mixed"],
                seed=3)
    third = iterate.run(cfg, work, mesh)
    assert "waiting_for_labels" not in third and [p["round"] for p in third["final"]["pm"]] == [0]


def test_pair_metrics_against_a_direct_count():
    rng = np.random.default_rng(0)
    margin = rng.normal(size=200).round(1)  # some exact zeros
    gold = rng.normal(size=200).round(1)
    out = pair_metrics(margin, gold)
    acc = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margin) / len(margin)
    decided = [(m, g) for m, g in zip(margin, gold) if g != 0]
    agree = sum(1.0 if m * g > 0 else 0.5 if m == 0 else 0.0 for m, g in decided) / len(decided)
    assert out["accuracy"] == pytest.approx(acc) and out["gold_agreement"] == pytest.approx(agree)


def test_a_policy_that_repeats_itself_gets_a_clear_error(two_rounds):
    """Near-greedy sampling gives the same response twice: those pairs are dropped and counted, and when
    no distinct pair can be found the error says why instead of looping forever."""
    from rlhfjax.data.hh import load_prompts
    from rlhfjax.data.tokenizing import encoder_for, tokenizer_for
    from rlhfjax.sampling import SamplingConfig

    cfg, lab, work, _ = two_rounds
    mesh = parallel.single_device_mesh()
    tok = tokenizer_for(cfg)
    enc = encoder_for(cfg, tok)
    prompts, _ = load_prompts(os.path.join(lab, "prompts"), split="test", limit=16)
    policy = comparisons.load_policy(os.path.join(work, "initial_policy"), mesh)
    greedy = SamplingConfig(max_new_tokens=4, temperature=1e-6, eos_id=tok.eos_token_id, pad_id=enc.pad_id)
    with parallel.activate(mesh), pytest.raises(BadInputError, match="identical"):
        comparisons.sample_pairs([policy], prompts, 4, encoder=enc, tokenizer=tok, sampling=greedy, mesh=mesh,
                                 batch_size=8, seed=0)
