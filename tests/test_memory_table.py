"""scripts/memory_table.py: model shapes give the published parameter counts, and the per-device split
follows the rule table (FSDP: 1/8 of everything; TP: 1/8 of all but the norm scales)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import memory_table  # noqa: E402

# Parameter counts as published on the models' hub pages / papers.
PUBLISHED = {"Pythia-1.4B": 1_414_647_808, "Qwen2.5-1.5B": 1_543_714_304, "Llama-3.1-8B": 8_030_261_248,
             "Llama-3.1-70B": 70_553_706_496}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_model_shapes_have_the_published_parameter_counts(name):
    local, total = memory_table.per_device_params(name, memory_table.mesh_sizes("dp", 8))
    assert total == local == PUBLISHED[name]


def test_per_device_split_under_fsdp_and_tp():
    cfg = memory_table.MODELS["Llama-3.1-8B"]
    total = PUBLISHED["Llama-3.1-8B"]
    local, _ = memory_table.per_device_params("Llama-3.1-8B", memory_table.mesh_sizes("fsdp", 8))
    assert local * 8 == total
    norms = (2 * cfg.num_layers + 1) * cfg.hidden_size  # two per block and the final one: replicated under TP
    local, _ = memory_table.per_device_params("Llama-3.1-8B", memory_table.mesh_sizes("tp", 16))
    assert local == (total - norms) // 8 + norms


def test_adamw_state_is_two_fp32_moments_per_param():
    assert memory_table.optimizer_bytes_per_param() == pytest.approx(8.0, abs=1e-3)
