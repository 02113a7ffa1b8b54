"""The sample-N recipes on the online runner with tiny random models: a killed-and-resumed run
continues identically (SuperHF), SuperHF trains on exactly the kept completions, bad
configs fail before any model loads."""

import importlib
import os

import jax
import numpy as np
import pytest
from helpers_online import make_lab

from rlhfjax import parallel
from rlhfjax.config import load_config
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import superhf as shf
from rlhfjax.recipes import superhf
from rlhfjax.train.metrics import read_jsonl

EXP = os.path.join(os.path.dirname(__file__), "..", "experiments")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_toylab):
    return make_lab(tmp_path_factory.mktemp("sample_n"), shared_toylab)


def config(method, lab, iterations, extra=()):
    return load_config(os.path.join(EXP, f"toylab_{method}.py:smoke"), [
        f"--config.data.toylab_dir={lab / 'toylab'}", f"--config.policy.init_from={lab / 'sft'}",
        f"--config.reward.init_from={lab / 'rm'}", f"--config.train.iterations={iterations}",
        "--config.train.save_every=1", "--config.optim.learning_rate=1e-2", *extra])


@pytest.mark.parametrize("method", ["superhf"])  # PPO's is tests/test_ppo_recipe.py; the runner's, test_online_runner
def test_resumed_run_continues_identically(method, lab, tmp_path):
    recipe = importlib.import_module(f"rlhfjax.recipes.{method}")
    mesh = parallel.single_device_mesh()
    straight = recipe.run(config(method, lab, 3), str(tmp_path / "straight"), mesh)
    recipe.run(config(method, lab, 1), str(tmp_path / "split"), mesh)  # "killed" after iteration 1
    resumed = recipe.run(config(method, lab, 3), str(tmp_path / "split"), mesh)
    a, b = (read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("straight", "split"))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    skip = ("time/", "perf/", "eval/")  # the killed run also evaluated at its last iteration, 1

    def same(r):
        return {k: v for k, v in r.items() if not k.startswith(skip)}

    for ra, rb in zip(a, b):  # every logged training number is the same
        assert same(ra) == same(rb)
    assert straight["final"]["loss"] == resumed["final"]["loss"]


def test_superhf_trains_on_the_kept_completions_only(lab):
    cfg = config("superhf", lab, 1, ["--config.superhf.kl_coef=0.0"])
    setup, state, _ = superhf.build(cfg, parallel.single_device_mesh())
    seen = {}

    def spy_update(train, batch, frozen, rng, **kw):
        seen.update(batch=jax.device_get(batch), kw=kw)
        return train, {"loss": np.zeros(1)}

    B = cfg.train.batch_size
    prompts = {"prompt_tokens_BxP": np.full((B, 16), 5, np.int32), "prompt_mask_BxP": np.ones((B, 16), np.int32)}
    original = superhf.minibatch_update
    superhf.minibatch_update = spy_update
    try:
        _, metrics, ro = superhf.iterate(state, prompts, jax.random.PRNGKey(0), setup=setup,
                                         loss_cfg=shf.SuperHFLossConfig(setup.roles.policy.cfg, setup.num_response))
    finally:
        superhf.minibatch_update = original
    S = cfg.superhf.superbatch
    assert ro.sequence_BxL.shape[0] == B * S
    assert seen["batch"]["sequence_BxL"].shape[0] == B * cfg.superhf.top_k
    assert seen["kw"]["num_minibatches"] == B // cfg.superhf.prompt_accumulation and not seen["kw"]["shuffle"]
    # the kept rows are the best of each prompt's group, by the normalised RM score
    assert metrics["reward/proxy_kept"] >= metrics["reward/proxy"]


@pytest.mark.parametrize("method,override", [
    ("superhf", "--config.superhf.prompt_accumulation=3"), ("superhf", "--config.superhf.top_k=9"),
    ("grpo", "--config.grpo.group_size=1"), ("rloo", "--config.rloo.num_minibatches=3"),
    ("bon", "--config.bon.n=(1, 99)")])
def test_bad_sample_n_configs_fail_early(method, override, lab, tmp_path):
    recipe = importlib.import_module(f"rlhfjax.recipes.{method}")
    with pytest.raises(ConfigError):
        recipe.run(config(method, lab, 1, [override]), str(tmp_path / "x"), parallel.single_device_mesh())


def test_prompt_batches_that_do_not_split_over_the_mesh_are_a_config_error(lab, tmp_path):
    """On the suite's 8 data-parallel CPU devices a batch of 4 prompts cannot be sharded: one clear error
    before anything loads, not a sharding failure inside the first jit."""
    from rlhfjax.recipes import grpo

    cfg = config("grpo", lab, 1, ["--config.train.batch_size=4"])
    mesh = parallel.make_mesh(cfg.mesh, jax.devices())  # every device, asked for (conftest: one by default)
    assert mesh.size == 8
    with pytest.raises(ConfigError, match="train.batch_size=4 is not divisible by the 8"):
        grpo.run(cfg, str(tmp_path / "x"), mesh)
    cfg = config("superhf", lab, 1, ["--config.train.eval_batch_size=12"])
    with pytest.raises(ConfigError, match="train.eval_batch_size=12"):
        superhf.run(cfg, str(tmp_path / "y"), mesh)
