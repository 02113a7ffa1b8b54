"""The sft and rm recipes end to end on the toy lab (smoke sizes), including exact resume."""

import json
import os

import jax
import numpy as np
import pytest

from rlhfjax.config import load_config
from rlhfjax.models.hf import load_pretrained, load_pretrained_scalar
from rlhfjax.recipes import rm, sft

HERE = os.path.dirname(__file__)
SFT_CFG = os.path.join(HERE, "..", "experiments", "toylab_sft.py")
RM_CFG = os.path.join(HERE, "..", "experiments", "toylab_rm.py")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return str(tmp_path_factory.mktemp("toylab") / "data")


@pytest.fixture(scope="module")
def sft_run(lab, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sft"))
    cfg = load_config(f"{SFT_CFG}:smoke", [f"--config.data.toylab_dir={lab}"])
    return workdir, sft.run(cfg, workdir)


def test_sft_run_writes_metrics_samples_and_a_loadable_model(sft_run):
    workdir, summary = sft_run
    records = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    evals = [r for r in records if "eval/nll" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(np.isfinite(r["eval/nll"]) and "reward/gold" in r for r in evals)
    samples = [json.loads(x) for x in open(os.path.join(workdir, "samples.jsonl"))]
    assert len(samples) == 2 * 8 and all("gold" in s for s in samples)
    cfg, _ = load_pretrained(os.path.join(workdir, "model"))
    assert cfg.hidden_size == 32 and summary["final"]["step"] == 4


def _params(workdir):
    return load_pretrained(os.path.join(workdir, "model"))[1]


def test_sft_resume_continues_exactly(lab, sft_run, tmp_path):
    """Interrupted after step 2 and restarted == the straight 4-step run (same params)."""
    straight_dir, _ = sft_run
    overrides = [f"--config.data.toylab_dir={lab}", "--config.optim.total_steps=4"]
    straight = str(tmp_path / "straight")
    sft.run(load_config(f"{SFT_CFG}:smoke", overrides), straight)
    resumed = str(tmp_path / "resumed")
    sft.run(load_config(f"{SFT_CFG}:smoke", overrides + ["--config.train.steps=2"]), resumed)
    sft.run(load_config(f"{SFT_CFG}:smoke", overrides), resumed)
    a, b = _params(straight), _params(resumed)
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert all(np.array_equal(x, y) for x, y in zip(flat_a, flat_b))
    lines = lambda d: [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]  # noqa: E731
    assert lines(straight) == lines(resumed)


def test_sft_with_chunked_logits_trains_as_unchunked(lab, sft_run, tmp_path, monkeypatch):
    """model.logits_chunk reaches the SFT model (its loss runs through `api.over_positions`) and the run's losses
    and params are the unchunked run's, to float32 rounding."""
    from rlhfjax.models import api

    traced = []
    original = api.over_positions
    monkeypatch.setattr(api, "over_positions", lambda *a, **k: traced.append(a[1]) or original(*a, **k))
    straight_dir, _ = sft_run
    chunked = str(tmp_path / "chunked")
    sft.run(load_config(f"{SFT_CFG}:smoke", [f"--config.data.toylab_dir={lab}", "--config.model.logits_chunk=8"]),
            chunked)
    assert traced and set(traced) == {8}
    lines = lambda d: [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]  # noqa: E731
    for a, b in zip(lines(chunked), lines(straight_dir)):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for x, y in zip(jax.tree.leaves(_params(chunked)), jax.tree.leaves(_params(straight_dir))):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("objective", ["ranked", "binary", "imitation"])
def test_rm_run_from_the_sft_policy(lab, sft_run, tmp_path, objective):
    sft_dir, _ = sft_run
    workdir = str(tmp_path / objective)
    cfg = load_config(f"{RM_CFG}:smoke", [f"--config.data.toylab_dir={lab}", f"--config.rm.objective={objective}",
                                          f"--config.model.init_from={sft_dir}/model"])
    summary = rm.run(cfg, workdir)
    final = summary["final"]
    for key in ("eval/accuracy", "eval/ece", "eval/gold_agreement", "eval/margin"):
        assert np.isfinite(final[key])
    assert os.path.exists(os.path.join(workdir, "calibration.png"))
    if objective != "imitation":
        load_pretrained_scalar(os.path.join(workdir, "model"))


def test_rm_on_the_toy_labs_ranked_lists_with_the_default_pool(lab, tmp_path):
    """The toy lab's ranked lists are one set for every pool: the default data.data_dir ('mixed', used for the
    eval pairs) must not be looked up among them (it once was, and the run stopped with a ConfigError)."""
    cfg = load_config(f"{RM_CFG}:smoke", [f"--config.data.toylab_dir={lab}", "--config.data.ranked_lists=true"])
    assert cfg.data.data_dir == "mixed"
    summary = rm.run(cfg, str(tmp_path / "ranked"))
    assert np.isfinite(summary["final"]["eval/accuracy"]) and np.isfinite(summary["final"]["loss"])


def test_rm_with_an_auxiliary_lm_loss_exports_the_reward_model(lab, sft_run, tmp_path):
    """rm.lm_coef > 0 trains an LM head beside the score head; the exported model is the reward model without
    it, and scores what the trained params score (less the head's bias: HF sequence classifiers have none,
    and a constant shift changes no preference)."""
    import jax
    import jax.numpy as jnp

    from rlhfjax.models import api

    sft_dir, _ = sft_run
    cfg = load_config(f"{RM_CFG}:smoke", [f"--config.data.toylab_dir={lab}", "--config.rm.lm_coef=0.5",
                                          f"--config.model.init_from={sft_dir}/model"])
    summary, state = rm.run_with_state(cfg, str(tmp_path / "aux"))
    assert "lm_head" in state.params["backbone"]
    model_cfg, exported = load_pretrained_scalar(summary["model_dir"])
    assert "lm_head" not in exported["backbone"]
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, size=(3, 10)))
    mask = jnp.ones_like(tokens)
    trained = api.scores(jax.device_get(state.params), model_cfg, tokens, mask)
    bias = np.asarray(state.params["head"]["bias"]).reshape(())
    np.testing.assert_allclose(api.scores(exported, model_cfg, tokens, mask), trained - bias, rtol=1e-5, atol=1e-6)
