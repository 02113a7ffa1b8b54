"""Scalar (reward/value) models against HF *ForSequenceClassification, and the head helpers."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hf_fixtures import VOCAB, make_scalar_checkpoint
from rlhfjax.models import ScalarModel, last_token_index, positions_from_mask, read_at
from rlhfjax.models.hf import load_pretrained_scalar, save_pretrained_scalar


def _right_padded(lengths, T=10, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, VOCAB, size=(len(lengths), T))  # pad id 0 never occurs inside a row
    mask = (np.arange(T)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    return tokens * mask, mask


def _ours(cfg, params, tokens, mask):
    m = jnp.asarray(mask)
    scalars = ScalarModel(cfg).apply({"params": params}, jnp.asarray(tokens), positions_from_mask(m), m)
    return np.asarray(read_at(scalars, last_token_index(m)))


def _theirs(model, tokens, mask):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask)).logits[:, 0].numpy()


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "qwen2"])
def test_reward_model_matches_hf_sequence_classifier_and_round_trips(tmp_path, family):
    hf_model = make_scalar_checkpoint(family, tmp_path / "rm")
    cfg, params = load_pretrained_scalar(str(tmp_path / "rm"))
    tokens, mask = _right_padded([10, 6, 3])
    ours, theirs = _ours(cfg, params, tokens, mask), _theirs(hf_model, tokens, mask)
    assert np.abs(theirs).max() > 0.05
    np.testing.assert_allclose(ours, theirs, atol=1e-4)

    save_pretrained_scalar(cfg, params, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "export"), attn_implementation="eager").eval()
    np.testing.assert_allclose(_theirs(reloaded, tokens, mask), ours, atol=1e-4)


def test_causal_lm_checkpoint_is_not_a_reward_model(tmp_path):
    from hf_fixtures import make_checkpoint

    make_checkpoint("llama", tmp_path)
    with pytest.raises(ValueError, match="lacks 1 tensor.*score.weight"):
        load_pretrained_scalar(str(tmp_path))


def test_last_token_index_and_read_at():
    mask = jnp.asarray([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])
    idx = last_token_index(mask)
    np.testing.assert_array_equal(np.asarray(idx), [2, 4, 0])
    values = jnp.arange(15.0).reshape(3, 5)
    np.testing.assert_array_equal(np.asarray(read_at(values, idx)), [2.0, 9.0, 10.0])


def test_export_refuses_a_nonzero_head_bias(tmp_path):
    make_scalar_checkpoint("gpt2", tmp_path / "rm")
    cfg, params = load_pretrained_scalar(str(tmp_path / "rm"))
    params["head"]["bias"] = np.ones((1,), np.float32)
    with pytest.raises(ValueError, match="bias"):
        save_pretrained_scalar(cfg, params, str(tmp_path / "out"))
