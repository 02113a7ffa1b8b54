"""Build a model from an experiment config's `model` section: an HF checkpoint or a preset."""

from __future__ import annotations

import jax

from rlhfjax.errors import ConfigError
from rlhfjax.models.config import ModelConfig, preset
from rlhfjax.models.transformer import init_params

# Keys of a `config.model` section that are not ModelConfig fields.
_NON_ARCH_KEYS = ("init_from", "family")


def preset_from_config(section, vocab_size: int) -> ModelConfig:
    """`preset(section.family, **architecture fields, vocab_size)`; no params (a mesh run creates
    them already sharded with `api.init_sharded`)."""
    fields = {k: v for k, v in section.items() if k not in _NON_ARCH_KEYS}
    try:
        return preset(section.family, vocab_size=vocab_size, **fields)
    except TypeError as e:  # an unknown keyword: name it
        raise ConfigError(f"config.model: {e}") from None


def execution(section) -> dict:
    """How a `model` section's model runs, whatever its weights: compute dtype, scanned layers, remat, chunked
    logits."""
    return {"dtype": section.dtype, "scan_layers": bool(section.scan_layers), "remat_policy": section.remat_policy,
            "logits_chunk": int(section.logits_chunk)}


def model_from_config(section, vocab_size: int, rng: jax.Array) -> tuple[ModelConfig, dict]:
    """`section.init_from` set: load that HF checkpoint (architecture fields ignored, `dtype` kept).
    Otherwise: `preset_from_config` with random params."""
    if section.init_from:
        from rlhfjax.models.hf import load_pretrained

        return load_pretrained(section.init_from, **execution(section))
    cfg = preset_from_config(section, vocab_size)
    return cfg, init_params(cfg, rng)
