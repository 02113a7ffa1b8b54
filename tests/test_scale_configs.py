"""experiments/hh_*.py at scale: every model × target × stage loads, its mesh fits the target's devices, its
batch splits evenly over the data-parallel devices and micro-batches, the per-device numbers its table
states are the arithmetic's, and the training state fits the device (docs/memory.md's computation).
Their `:smoke` variants run in tests/test_experiments.py like every experiment file's."""

import itertools
import os
import re
import sys

import pytest

from rlhfjax import parallel, scale_configs
from rlhfjax.config import load_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import memory_table  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHAPES = {"pythia-1.4b": "Pythia-1.4B", "qwen2.5-1.5b": "Qwen2.5-1.5B"}  # memory_table's names


def _load(stage, model, target):
    return load_config(os.path.join(ROOT, "experiments", f"hh_{stage}.py:{model},{target}"))


@pytest.mark.parametrize("stage, model, target", list(itertools.product(
    scale_configs.STAGES, scale_configs.MODELS, scale_configs.TARGETS)))
def test_each_config_fits_its_target(stage, model, target):
    c = _load(stage, model, target)
    t = scale_configs.TARGETS[target]
    sizes = parallel.mesh_shape(c.mesh, t.devices)
    dp = sizes["data"] * sizes["fsdp"]
    B, accum = c.train.batch_size, c.optim.grad_accum_steps
    assert B % dp == 0 and (B // dp) % accum == 0, (B, dp, accum)
    # The table's "why" states the per-device numbers: they must be the arithmetic's.
    stated = [int(n) for n in re.findall(r"(\d+)(?: \w+)?/(?:device|chip)", t.plans[stage].why)]
    if stage in ("sft", "rm"):
        assert stated[0] == B // dp
        if accum > 1:
            assert f"{accum} micro-batches" in t.plans[stage].why
    elif stage == "ppo":
        assert stated == [B // dp, B // c.ppo.num_minibatches // dp]
        assert B % c.ppo.num_minibatches == 0
    else:
        assert stated == [B * c.superhf.superbatch // dp, B // dp]
    # Training state per device (trainable fp32 + grads + AdamW; frozen fp32) within 75% of its memory.
    shape = SHAPES[model]
    lm, _ = memory_table.per_device_params(shape, sizes)
    head, _ = memory_table.per_device_params(shape, sizes, scalar_head=True)
    trainable = 16
    need = {"sft": lm * trainable, "rm": head * trainable,
            "ppo": (lm + head) * trainable + (lm + head) * 4, "superhf": lm * trainable + lm * 4}[stage]
    assert need <= 0.75 * t.memory_gib * memory_table.GiB
    assert c.data.source == "Anthropic/hh-rlhf" and c.distributed.mode == "auto"


@pytest.mark.parametrize("target", scale_configs.TARGETS)
def test_smoke_variants_keep_the_targets_layout_on_8_devices(target):
    for stage in scale_configs.STAGES:
        c = load_config(os.path.join(ROOT, "experiments", f"hh_{stage}.py:smoke,{target}"))
        full = _load(stage, "pythia-1.4b", target)
        sizes = parallel.mesh_shape(c.mesh, 8)
        assert c.mesh.strategy == full.mesh.strategy and (sizes["data"] > 1) == (full.mesh.data > 1)
        assert c.optim.grad_accum_steps == full.optim.grad_accum_steps
        execution = c.policy if stage in ("ppo", "superhf") else c.model
        assert execution.scan_layers and execution.remat_policy == scale_configs.TARGETS[target].plans[stage].remat
        assert c.data.source == "toylab" and not execution.init_from
        # the LM head is chunked at the target's lengths (a chunk shorter than every stage's loss positions)
        assert 0 < (full.policy if stage in ("ppo", "superhf") else full.model).logits_chunk < \
            scale_configs.RESPONSE_TOKENS


def test_unknown_variant_parts_are_refused_with_the_choices():
    with pytest.raises(Exception, match="unknown config variant part 'tpu-v3'.*gpu-8"):
        load_config(os.path.join(ROOT, "experiments", "hh_sft.py:tpu-v3"))
