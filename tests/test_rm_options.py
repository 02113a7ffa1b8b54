"""The rm recipe's fine-tuning options: early stopping on a validation split (BestParams), epoch-based
training (every pair once per epoch) and backbone freezing (optim.freeze_for)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.config import load_config
from rlhfjax.models import init_scalar_params, preset
from rlhfjax.objectives import rm as rm_objective
from rlhfjax.offline import runner
from rlhfjax.recipes import rm
from rlhfjax.train import early_stopping
from rlhfjax.train.optim import default_optim_config, make_optimizer
from rlhfjax.train.state import TrainState
from rlhfjax.train.update import update

HERE = os.path.dirname(__file__)
RM_CFG = os.path.join(HERE, "..", "experiments", "toylab_rm.py")


@pytest.fixture(scope="module")
def toylab_dir(tmp_path_factory):
    """A toy lab with a few rows of everything (a full one takes ~10 s to build)."""
    from rlhfjax.data.toylab import Sizes, build_toylab

    path = str(tmp_path_factory.mktemp("toylab") / "data")
    build_toylab(path, 0, sizes=Sizes(sft=8, sft_test=8, comparisons=48, comparisons_test=16, generic=8,
                                      generic_test=8, ranked=4, prompts=8, test_prompts=8, ood_prompts=8))
    return path


def _params(step):
    return {"w": jnp.full((3,), float(step)), "b": {"c": jnp.full((2, 2), -float(step))}}


@pytest.mark.parametrize("select_by, values", [
    ("loss", [0.69, 0.61, 0.66, 0.55, 0.55, 0.58, 0.70]),  # a tie with the best keeps the earlier step
    ("accuracy", [0.50, 0.52, 0.60, 0.56, 0.60, 0.58, 0.59]),
])
def test_early_stopping_keeps_the_best_validation_checkpoint_and_its_step_across_a_restart(tmp_path, select_by,
                                                                                            values):
    metric, better = rm.SELECT_BY[select_by]
    sign = 1 if better is min else -1
    want = int(np.argmin(sign * np.asarray(values)))  # the first step with the best value
    tracker = early_stopping.BestParams(str(tmp_path / "best"), metric, better)
    for step, value in enumerate(values[:5]):
        params = _params(step)
        tracker.offer(step, {metric: value}, params)
        for leaf in jax.tree.leaves(params):
            leaf.delete()  # what the next update's donation does: the tracker must hold its own copy
    tracker.close()

    resumed = early_stopping.BestParams(str(tmp_path / "best"), metric, better)  # a restarted run
    assert resumed.restore(_params(0))
    for step, value in enumerate(values[5:], start=5):
        resumed.offer(step, {metric: value}, _params(step))
    # A replayed step before the best (a resume from an older checkpoint) never replaces it.
    assert not resumed.offer(1, {metric: sign * -10.0}, _params(99))
    assert resumed.step == want and resumed.metrics[metric] == values[want]
    np.testing.assert_array_equal(resumed.params["w"], np.full(3, float(want)))
    np.testing.assert_array_equal(resumed.params["b"]["c"], np.full((2, 2), -float(want)))
    resumed.close()


def test_epochs_visit_every_training_pair_exactly_once_per_epoch():
    cfg = load_config(f"{RM_CFG}:smoke", ["--config.train.epochs=3", "--config.train.batch_size=8"])
    examples = [f"pair{i}" for i in range(21)]  # not a multiple of the batch size
    it = runner.train_iterator(cfg, examples, lambda items: list(items))
    resolved = runner.resolve_epochs(cfg, len(it))
    per_epoch = math.ceil(21 / 8)
    assert resolved.train.steps == 3 * per_epoch and resolved.train.eval_every == per_epoch
    assert cfg.train.steps == 4  # the given config is not changed
    seen = []
    for epoch in range(3):
        batch_rows = [next(it) for _ in range(per_epoch)]
        assert all(len(b) == 8 for b in batch_rows)  # static shapes: the last batch is padded
        visited = [x for b in batch_rows for x in b if x is not None]
        assert sorted(visited) == sorted(examples), epoch
        seen.append(visited)
    assert seen[0] != seen[1]  # reshuffled every epoch
    assert runner.resolve_epochs(load_config(f"{RM_CFG}:smoke"), len(it)).train.steps == 4  # epochs = 0: steps


def _pairs_batch(B=4, T=12, vocab=40, seed=0):
    rng = np.random.default_rng(seed)
    batch = {"row_mask_B": np.ones(B, np.float32)}
    for name in ("chosen", "rejected"):
        lengths = rng.integers(6, T + 1, B)
        mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
        response = mask * (np.arange(T)[None] >= 4)
        batch.update({f"{name}_tokens_BxT": rng.integers(1, vocab, (B, T)).astype(np.int32) * mask,
                      f"{name}_mask_BxT": mask, f"{name}_response_mask_BxT": response.astype(np.int32)})
    return batch


def test_backbone_freezing_holds_the_backbone_bit_identical_while_the_head_trains():
    freeze_steps = 3
    cfg = preset("llama", vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                 intermediate_size=32, max_position_embeddings=16)
    loss_config = rm_objective.RMLossConfig(cfg, objective="ranked")
    optim = default_optim_config()
    optim.learning_rate, optim.weight_decay = 1e-2, 0.1  # decay alone would move a merely zero-gradient backbone
    optim.freeze_steps = freeze_steps
    params = init_scalar_params(cfg, jax.random.PRNGKey(0))
    params["head"] = jax.tree.map(lambda x: x + 0.1, params["head"])  # nonzero: the backbone gets gradients
    start = jax.tree.map(np.asarray, params)
    state = TrainState.create(params, make_optimizer(optim), jax.random.PRNGKey(1))
    batch = _pairs_batch()
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa
    for step in range(1, 5):
        state, metrics = update(state, batch, rm_objective.loss_fn, None, loss_config)
        now = jax.tree.map(np.asarray, state.params)
        assert float(metrics["optim/grad_norm"]) > 0
        assert not same(now["head"], start["head"]), step
        assert same(now["backbone"], start["backbone"]) == (step <= freeze_steps), step


def test_recipe_exports_the_best_validation_checkpoint(tmp_path, toylab_dir):
    """End to end (tiny): epochs resolve the steps, the validation split is carved from the training pairs,
    and the exported model is the one at the logged step with the best validation loss."""
    cfg = load_config(f"{RM_CFG}:smoke", [f"--config.data.toylab_dir={toylab_dir}", "--config.data.limit=24",
                                          "--config.train.epochs=2", "--config.rm.val_fraction=0.25",
                                          "--config.optim.learning_rate=3e-3", "--config.train.save_every=0",
                                          "--config.train.eval_every=3"])
    summary = rm.run(cfg, str(tmp_path / "run"))
    assert summary["train_examples"] == 18 and summary["val_examples"] == 6
    assert summary["steps"] == 2 * math.ceil(18 / 8)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [r for r in map(json.loads, f) if "val/loss" in r]
    assert [r["step"] for r in records] == [3, 6]  # once per epoch
    assert all("eval/accuracy" in r for r in records)  # train.eval_every=3: the eval pairs at every epoch too
    candidates = [(0, summary["init"])] + [(r["step"], r) for r in records]
    step, record = min(candidates, key=lambda c: c[1]["val/loss"])
    assert summary["best_step"] == step and summary["final"]["val/loss"] == record["val/loss"]
    # The exported model's re-evaluation reproduces the eval logged at that step.
    assert summary["final"]["eval/accuracy"] == pytest.approx(record["eval/accuracy"], abs=1e-6)
    assert summary["final"]["eval/margin"] == pytest.approx(record["eval/margin"], rel=1e-4, abs=1e-6)
    if step != records[-1]["step"]:  # and it is not the last step's model
        assert summary["last"]["eval/margin"] != pytest.approx(summary["final"]["eval/margin"], rel=1e-4, abs=1e-6)
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["train"]["steps"] == cfg.train.steps  # the config as given
