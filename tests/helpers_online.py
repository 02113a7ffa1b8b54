"""A toy lab with a tiny random policy and reward model on disk (as the sft and rm stages write them)."""

from __future__ import annotations

import os

import jax

from rlhfjax.models import init_params, init_scalar_params, preset


def tiny_cfg(vocab):
    return preset("llama", vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  intermediate_size=64, max_position_embeddings=64)


def scalar_params(cfg, seed):
    p = init_scalar_params(cfg, jax.random.PRNGKey(seed))
    # The head is zero-initialised (every score 0); give it a random direction so scores vary.
    p["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(seed + 100), p["head"]["kernel"].shape)
    return p


def make_lab(root, toylab):
    """<root>/toylab (a link to the run's toy lab `toylab`: conftest's `shared_toylab`), <root>/sft (random LM),
    <root>/rm (random reward model)."""
    from rlhfjax.data.tokenizing import load_tokenizer
    from rlhfjax.models.hf import save_pretrained, save_pretrained_scalar

    data = str(root / "toylab")
    os.symlink(toylab, data)
    tok = load_tokenizer(os.path.join(data, "tokenizer"))
    cfg = tiny_cfg(len(tok)).replace(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                     bos_token_id=tok.bos_token_id)
    save_pretrained(cfg, init_params(cfg, jax.random.PRNGKey(0)), str(root / "sft"), tokenizer=tok)
    save_pretrained_scalar(cfg, scalar_params(cfg, 1), str(root / "rm"), tokenizer=tok, drop_bias=True)
    return root
