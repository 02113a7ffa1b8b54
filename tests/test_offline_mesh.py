"""Offline recipes on a mesh: sft and rm trained FSDP over the 8 virtual CPU devices (conftest) give the
same per-step losses as on one device, and the FSDP run's params really are sharded."""

import json
import os

import jax
import pytest

from rlhfjax import parallel
from rlhfjax.config import load_config
from rlhfjax.recipes import rm, sft

HERE = os.path.dirname(__file__)
SFT_CFG = os.path.join(HERE, "..", "experiments", "toylab_sft.py")
RM_CFG = os.path.join(HERE, "..", "experiments", "toylab_rm.py")

# Losses and gradient norms are compared. fp32 throughout (conftest: highest matmul precision);
# sharding only changes reduction orders (the batch sum is split over 8 devices, FSDP all-gathers
# and reduce-scatters), which gives ~1e-7 relative differences here (≤ 2e-7 measured) and could
# grow through Adam over a few steps. 1e-4 leaves orders of magnitude of headroom while any real
# difference (a wrong mask, a dropped row, a mis-weighted micro-batch) moves them by ≳1e-2.
RTOL = 1e-4


def _losses(workdir):
    """{step: (loss, gradient norm)} of the training steps."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: (r["loss"], r["optim/grad_norm"]) for r in map(json.loads, f) if "loss" in r}


def _assert_fsdp_sharded(params):
    """The (64-row) embedding and a block kernel are split over all 8 devices on the fsdp axis."""
    backbone = params.get("backbone", params)
    for leaf in (backbone["embed"]["embedding"], backbone["layer_0"]["mlp"]["up"]["kernel"]):
        sharding = leaf.sharding
        assert len(sharding.device_set) == 8 and not sharding.is_fully_replicated, sharding
        assert "fsdp" in jax.tree.leaves(tuple(sharding.spec)), sharding.spec


# Smoke configs made smaller still: compiling for 8 devices dominates these runs. Short responses keep
# every batch in one length bucket (one compilation of the update).
SMALL = ["--config.model.num_layers=1", "--config.data.max_response_len=8", "--config.train.eval_every=4"]


def _compare(recipe, cfg_file, toylab_data, tmp_path, overrides, fsdp_only=()):
    """Run on `mesh.strategy=fsdp` (the recipe builds the mesh from the config) and on a one-device mesh."""
    base = [f"--config.data.toylab_dir={toylab_data}", *SMALL, *overrides]
    fsdp_dir, one_dir = str(tmp_path / "fsdp"), str(tmp_path / "one")
    _, state = recipe.run_with_state(load_config(cfg_file, base + ["--config.mesh.strategy=fsdp", *fsdp_only]),
                                     fsdp_dir)
    _assert_fsdp_sharded(state.params)
    recipe.run(load_config(cfg_file, base), one_dir, mesh=parallel.single_device_mesh())
    fsdp, one = _losses(fsdp_dir), _losses(one_dir)
    assert sorted(fsdp) == sorted(one) == [1, 2, 3, 4]
    for step in one:
        assert fsdp[step] == pytest.approx(one[step], rel=RTOL), (step, fsdp, one)
    assert len({loss for loss, _ in one.values()}) == 4  # every step saw different data or params


def test_sft_fsdp_matches_one_device(toylab_data, tmp_path):
    assert len(jax.devices()) == 8
    _compare(sft, f"{SFT_CFG}:smoke", toylab_data, tmp_path, [])


def test_rm_fsdp_with_accumulation_matches_one_device(toylab_data, tmp_path):
    """Also exact accumulation on the mesh: the FSDP run splits each 16-row batch into 2 micro-batches of
    8 (one row per device), the one-device run does not; the ranked loss is a row mean, so they agree."""
    # No warmup and a large step: the zero-initialised head scores every pair 0 (loss log 2) only at step 1.
    _compare(rm, f"{RM_CFG}:smoke", toylab_data, tmp_path,
             ["--config.train.batch_size=16", "--config.optim.warmup_steps=0", "--config.optim.learning_rate=1e-2"],
             fsdp_only=["--config.optim.grad_accum_steps=2"])


def test_batch_size_not_divisible_by_the_data_parallel_devices_is_refused(toylab_data, tmp_path):
    cfg = load_config(f"{RM_CFG}:smoke", [f"--config.data.toylab_dir={toylab_data}", "--config.train.batch_size=12"])
    with pytest.raises(ValueError, match=r"train\.batch_size=12 is not divisible by the 8 data-parallel devices"):
        rm.run(cfg, str(tmp_path), parallel.make_mesh(cfg.mesh, jax.devices()))  # all 8 (conftest: one by default)
