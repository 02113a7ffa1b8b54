"""Bad input to the HF interop layer fails early with a message that says what to do."""

import json

import numpy as np
import pytest

from hf_fixtures import make_checkpoint
from rlhfjax.models import ModelConfig
from rlhfjax.models.hf import safetensors_io
from rlhfjax.models.hf import load_pretrained, save_pretrained


def test_hub_id_without_network_names_id_and_local_alternative(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(OSError) as err:
        load_pretrained("EleutherAI/pythia-70m")
    msg = str(err.value)
    assert "EleutherAI/pythia-70m" in msg and "local directory" in msg


def test_missing_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        load_pretrained(str(tmp_path / "nope"))


def test_unsupported_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError) as err:
        load_pretrained(str(tmp_path))
    msg = str(err.value)
    assert "'bert'" in msg
    for family in ("gpt2", "gpt_neox", "llama", "qwen2"):
        assert family in msg


def _rewrite_tensor(path, name, new_value):
    f = safetensors_io.SafetensorsFile(str(path))
    tensors = {n: np.array(f[n]) for n in f}
    tensors[name] = new_value
    del f
    safetensors_io.write(str(path), tensors)


def test_wrong_shape_names_parameter_and_both_shapes(tmp_path):
    make_checkpoint("llama", tmp_path)
    name = "model.layers.1.mlp.up_proj.weight"  # [96, 64] in the tiny config
    _rewrite_tensor(tmp_path / "model.safetensors", name, np.zeros((95, 64), np.float32))
    with pytest.raises(ValueError) as err:
        load_pretrained(str(tmp_path))
    msg = str(err.value)
    assert name in msg and "layer_1/mlp/up/kernel" in msg
    assert "(95, 64)" in msg and "(96, 64)" in msg


def test_fused_tensor_wrong_shape_is_caught_before_splitting(tmp_path):
    make_checkpoint("gpt2", tmp_path)
    name = "transformer.h.0.attn.c_attn.weight"
    _rewrite_tensor(tmp_path / "model.safetensors", name, np.zeros((32, 90), np.float32))
    with pytest.raises(ValueError, match=r"c_attn\.weight.*\(32, 90\).*\(32, 96\)"):
        load_pretrained(str(tmp_path))


def test_missing_and_unexpected_tensors(tmp_path):
    make_checkpoint("qwen2", tmp_path)
    f = safetensors_io.SafetensorsFile(str(tmp_path / "model.safetensors"))
    tensors = {n: np.array(f[n]) for n in f}
    del f
    tensors["model.layers.0.self_attn.extra.weight"] = np.zeros(3, np.float32)
    safetensors_io.write(str(tmp_path / "model.safetensors"), tensors)
    with pytest.raises(ValueError, match="does not use: model.layers.0.self_attn.extra.weight"):
        load_pretrained(str(tmp_path))
    del tensors["model.layers.0.self_attn.extra.weight"], tensors["model.norm.weight"]
    safetensors_io.write(str(tmp_path / "model.safetensors"), tensors)
    with pytest.raises(ValueError, match="lacks 1 tensor.*model.norm.weight"):
        load_pretrained(str(tmp_path))


def test_unknown_model_config_field():
    with pytest.raises(ValueError, match="unknown ModelConfig field.*hiden_size"):
        ModelConfig.from_dict({"family": "llama", "hiden_size": 64})
    with pytest.raises(ValueError, match="unsupported model family 'bert'"):
        ModelConfig(family="bert")


def test_export_refuses_configs_the_family_cannot_express(tmp_path):
    from rlhfjax.models import init_params, preset
    import jax

    cfg = preset("gpt2", position="rope")
    with pytest.raises(ValueError, match="cannot be expressed as a HF gpt2 checkpoint.*position"):
        save_pretrained(cfg, init_params(cfg, jax.random.PRNGKey(0)), str(tmp_path))
