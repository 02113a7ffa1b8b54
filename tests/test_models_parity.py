"""Logit parity with transformers' PyTorch models, per family, and export round trips."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hf_fixtures import VOCAB, make_checkpoint, torch_logits
from rlhfjax.models import Transformer, positions_from_mask
from rlhfjax.models.hf import load_pretrained, save_pretrained

CASES = [("gpt2", "base"), ("gpt_neox", "base"), ("llama", "base"), ("llama", "llama3"), ("qwen2", "base")]
TOL = 1e-4


def _batch(pad_amounts, T=12, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, VOCAB, size=(len(pad_amounts), T))
    mask = np.ones_like(tokens)
    for b, n in enumerate(pad_amounts):
        mask[b, :n] = 0
        tokens[b, :n] = 0
    return tokens, mask, np.asarray(positions_from_mask(jnp.asarray(mask)))


def _ours(cfg, params, tokens, mask, positions):
    out = Transformer(cfg).apply({"params": params}, jnp.asarray(tokens), jnp.asarray(positions),
                                 jnp.asarray(mask))
    return np.asarray(out.logits)


# Params per layer, or stacked for one scanned block (model.scan_layers) with a remat policy.
LAYOUTS = {"per_layer": {}, "scanned": {"scan_layers": True, "remat_policy": "dots_saveable"}}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family,variant", CASES)
@pytest.mark.parametrize("pads", [(0, 0, 0), (0, 3, 7)], ids=["no_pad", "left_pad"])
def test_logits_match_transformers(tmp_path, family, variant, pads, layout):
    torch_model = make_checkpoint(family, tmp_path / "ckpt", variant)
    cfg, params = load_pretrained(str(tmp_path / "ckpt"), **LAYOUTS[layout])
    assert cfg.family == family and ("layers" in params) == cfg.scan_layers
    tokens, mask, positions = _batch(pads)
    ours = _ours(cfg, params, tokens, mask, positions)
    ref = torch_logits(torch_model, tokens, mask, positions)
    valid = mask.astype(bool)
    assert np.abs(ref[valid]).max() > 0.1  # the comparison is not between near-zero logits
    np.testing.assert_array_less(np.abs(ours[valid] - ref[valid]).max(), TOL)


@pytest.mark.parametrize("family,variant", CASES)
def test_left_padding_does_not_change_real_token_logits(tmp_path, family, variant):
    make_checkpoint(family, tmp_path / "ckpt", variant)
    cfg, params = load_pretrained(str(tmp_path / "ckpt"))
    tokens, mask, positions = _batch((0,), T=8)
    padded = np.concatenate([np.zeros((1, 5), tokens.dtype), tokens], axis=1)
    pmask = np.concatenate([np.zeros((1, 5), mask.dtype), mask], axis=1)
    plain = _ours(cfg, params, tokens, mask, positions)
    shifted = _ours(cfg, params, padded, pmask, np.asarray(positions_from_mask(jnp.asarray(pmask))))
    np.testing.assert_allclose(shifted[:, 5:], plain, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family,variant", CASES)
def test_export_round_trip(tmp_path, family, variant, layout):
    torch_model = make_checkpoint(family, tmp_path / "ckpt", variant)
    cfg, params = load_pretrained(str(tmp_path / "ckpt"), **LAYOUTS[layout])
    # A small shard limit forces the sharded (index.json) layout on both write and read.
    save_pretrained(cfg, params, str(tmp_path / "export"), max_shard_bytes=20_000)
    assert (tmp_path / "export" / "model.safetensors.index.json").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export"),
                                                                 attn_implementation="eager")
    reloaded.eval()
    original = torch_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        if name in original:
            assert torch.equal(tensor, original[name]), name
    tokens, mask, positions = _batch((0, 4, 1))
    ours = _ours(cfg, params, tokens, mask, positions)
    theirs = torch_logits(reloaded, tokens, mask, positions)
    valid = mask.astype(bool)
    np.testing.assert_array_less(np.abs(ours[valid] - theirs[valid]).max(), TOL)
    # ...and rlhfjax reads its own export back to identical params.
    cfg2, params2 = load_pretrained(str(tmp_path / "export"), **LAYOUTS[layout])
    assert cfg2 == cfg
    np.testing.assert_array_equal(_ours(cfg2, params2, tokens, mask, positions), ours)
