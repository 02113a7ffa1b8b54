"""Tiny random transformers (PyTorch) checkpoints of each supported family, written to disk.

Weights are re-drawn with a large spread (norm scales around 1, biases non-zero) because HF's
default init sets biases to 0 and norms to 1, which would hide a mis-mapped bias or norm.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB = 96


def _rope(theta=10000.0, **extra):
    return {"rope_type": extra.pop("rope_type", "default"), "rope_theta": theta, **extra}


def hf_config(family: str, variant: str = "base"):
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                       eos_token_id=1, bos_token_id=1)
    if family == "gpt_neox":
        return transformers.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=64,
            rope_parameters=_rope(10000.0, partial_rotary_factor=0.25), eos_token_id=1)
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64, eos_token_id=1)
    if family == "llama":
        if variant == "llama3":  # Llama-3.1 style rope scaling, biases, tied embeddings
            return transformers.LlamaConfig(
                **common, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                rope_parameters=_rope(500000.0, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=16))
        return transformers.LlamaConfig(**common, rope_parameters=_rope(10000.0))
    if family == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=True, rope_parameters=_rope(1e6))
    raise ValueError(family)


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            is_norm_scale = p.ndim == 1 and ("norm" in name or ".ln_" in name) and name.endswith("weight")
            p.copy_(1.0 + noise if is_norm_scale else noise)
    return model


def make_checkpoint(family: str, path, variant: str = "base", seed: int = 0):
    """Write a random tiny HF checkpoint to `path`; returns the torch model (eval mode, fp32)."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(family, variant),
                                                          attn_implementation="eager")
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(str(path), safe_serialization=True)
    return model


def torch_logits(model, tokens, mask, positions):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(np.array(tokens), dtype=torch.long),
                    attention_mask=torch.tensor(np.array(mask), dtype=torch.long),
                    position_ids=torch.tensor(np.array(positions), dtype=torch.long))
    return out.logits.float().numpy()


def make_scalar_checkpoint(family: str, path, seed: int = 0):
    """A random HF *ForSequenceClassification (num_labels=1, pad id 0) checkpoint, like a reward model."""
    torch.manual_seed(seed)
    config = hf_config(family)
    config.num_labels = 1
    config.pad_token_id = 0
    model = transformers.AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(str(path), safe_serialization=True)
    return model
