"""HF `PretrainedConfig` <-> `ModelConfig`: per-family field mapping, rope settings (transformers v4
and v5 conventions), activation names and special-token ids; `_check_exportable` refuses a config its
HF family cannot express.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rlhfjax.errors import BadInputError
from rlhfjax.models.config import SUPPORTED_FAMILIES, ModelConfig, preset

_ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                        "gelu": "gelu_exact", "silu": "silu", "swish": "silu", "relu": "relu"}
_ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu_exact": "gelu", "silu": "silu", "relu": "relu"}


def _rope_from_hf(hf) -> dict[str, Any]:
    """Rope settings from either transformers v5 (`rope_parameters`) or v4 (`rope_theta`,
    `rope_scaling`, GPT-NeoX `rotary_pct`/`rotary_emb_base`) config attributes."""
    params = dict(getattr(hf, "rope_parameters", None) or {})
    scaling = dict(getattr(hf, "rope_scaling", None) or {})
    src = params if params.get("rope_type") else scaling
    theta = (params.get("rope_theta") or getattr(hf, "rope_theta", None)
             or getattr(hf, "rotary_emb_base", None) or 10000.0)
    fraction = (params.get("partial_rotary_factor") or getattr(hf, "partial_rotary_factor", None)
                or getattr(hf, "rotary_pct", None) or 1.0)
    kind = src.get("rope_type") or src.get("type") or "default"
    out: dict[str, Any] = dict(rope_theta=float(theta), rotary_fraction=float(fraction))
    if kind == "default":
        return out
    if kind not in ("linear", "llama3"):
        raise BadInputError(f"unsupported rope scaling type {kind!r}; supported: default, linear, llama3")
    out.update(rope_scaling=kind, rope_scaling_factor=float(src["factor"]))
    if kind == "llama3":
        out.update(rope_low_freq_factor=float(src["low_freq_factor"]),
                   rope_high_freq_factor=float(src["high_freq_factor"]),
                   rope_original_max_positions=int(src["original_max_position_embeddings"]))
    return out


def _token_ids(hf) -> dict[str, int | None]:
    def one(v):
        return v[0] if isinstance(v, (list, tuple)) else v
    return dict(bos_token_id=one(getattr(hf, "bos_token_id", None)),
                eos_token_id=one(getattr(hf, "eos_token_id", None)),
                pad_token_id=one(getattr(hf, "pad_token_id", None)))


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS_FROM_HF:
        raise BadInputError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS_FROM_HF)}")
    return _ACTIVATIONS_FROM_HF[name]


def config_from_hf(hf, **overrides: Any) -> ModelConfig:
    """ModelConfig from a transformers `PretrainedConfig` of a supported family."""
    family = hf.model_type
    if family not in SUPPORTED_FAMILIES:
        raise BadInputError(f"unsupported model_type {family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    ids = _token_ids(hf)
    if family == "gpt2":
        if getattr(hf, "scale_attn_by_inverse_layer_idx", False) or not getattr(hf, "scale_attn_weights", True):
            raise BadInputError("GPT-2 checkpoints with non-standard attention scaling are not supported")
        cfg = preset("gpt2", vocab_size=hf.vocab_size, hidden_size=hf.n_embd, num_layers=hf.n_layer,
                     num_heads=hf.n_head, intermediate_size=hf.n_inner or 4 * hf.n_embd,
                     max_position_embeddings=hf.n_positions, norm_eps=hf.layer_norm_epsilon,
                     activation=_activation(hf.activation_function),
                     tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)), **ids)
    elif family == "gpt_neox":
        bias = bool(getattr(hf, "attention_bias", True))
        cfg = preset("gpt_neox", vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
                     num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                     intermediate_size=hf.intermediate_size, max_position_embeddings=hf.max_position_embeddings,
                     norm_eps=hf.layer_norm_eps, activation=_activation(hf.hidden_act),
                     parallel_residual=bool(hf.use_parallel_residual), qkv_bias=bias, attn_out_bias=bias,
                     tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)), **_rope_from_hf(hf), **ids)
    else:  # llama, qwen2
        if family == "qwen2" and getattr(hf, "use_sliding_window", False):
            raise BadInputError("Qwen2 checkpoints with use_sliding_window=True are not supported")
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
        if family == "llama":
            bias = dict(qkv_bias=bool(getattr(hf, "attention_bias", False)),
                        attn_out_bias=bool(getattr(hf, "attention_bias", False)),
                        mlp_bias=bool(getattr(hf, "mlp_bias", False)))
        else:
            bias = dict(qkv_bias=True, attn_out_bias=False, mlp_bias=False)
        cfg = preset(family, vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
                     num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                     num_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
                     head_dim=head_dim, intermediate_size=hf.intermediate_size,
                     max_position_embeddings=hf.max_position_embeddings, norm_eps=hf.rms_norm_eps,
                     activation=_activation(hf.hidden_act),
                     tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
                     **bias, **_rope_from_hf(hf), **ids)
    return cfg.replace(**overrides) if overrides else cfg


def _check_exportable(cfg: ModelConfig):
    """A config must lie inside what its HF family can express."""
    fixed = {k: v for k, v in dataclasses.asdict(preset(cfg.family)).items()
             if k in ("norm", "mlp", "position", "parallel_residual")}
    if cfg.family == "gpt2":
        fixed.update(qkv_bias=True, attn_out_bias=True, mlp_bias=True, num_kv_heads=None, head_dim=None)
    if cfg.family == "gpt_neox":
        fixed.update(mlp_bias=True, num_kv_heads=None, head_dim=None)
    if cfg.family == "qwen2":
        fixed.update(qkv_bias=True, attn_out_bias=False, mlp_bias=False)
    if cfg.family == "gpt_neox":
        fixed.pop("parallel_residual")  # GPT-NeoX has a switch for it
    bad = [f"{k}={getattr(cfg, k)!r} (expected {v!r})" for k, v in fixed.items()
           if getattr(cfg, k) != v and not (k == "num_kv_heads" and cfg.kv_heads == cfg.num_heads)
           and not (k == "head_dim" and cfg.dim_per_head == cfg.hidden_size // cfg.num_heads)]
    if cfg.family == "llama" and cfg.qkv_bias != cfg.attn_out_bias:
        bad.append("qkv_bias != attn_out_bias (Llama has one attention_bias switch)")
    if cfg.family == "gpt_neox" and cfg.qkv_bias != cfg.attn_out_bias:
        bad.append("qkv_bias != attn_out_bias (GPT-NeoX has one attention_bias switch)")
    if cfg.family == "gpt2" and (cfg.rope_scaling or cfg.rotary_fraction != 1.0):
        bad.append("GPT-2 has learned positions, not rope")
    if bad:
        raise ValueError(f"config cannot be expressed as a HF {cfg.family} checkpoint: {'; '.join(bad)}")


def config_to_hf(cfg: ModelConfig):
    """transformers `PretrainedConfig` for a ModelConfig (v4 and v5 rope conventions)."""
    import transformers

    _check_exportable(cfg)
    ids = dict(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)
    act = _ACTIVATIONS_TO_HF[cfg.activation]
    if cfg.family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.max_position_embeddings, n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.mlp_size, activation_function=act,
            layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, **ids)
    cls = {"gpt_neox": transformers.GPTNeoXConfig, "llama": transformers.LlamaConfig,
           "qwen2": transformers.Qwen2Config}[cfg.family]
    rope: dict[str, Any] = {"rope_type": cfg.rope_scaling or "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope["factor"] = cfg.rope_scaling_factor
    if cfg.rope_scaling == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_positions)
    if cfg.rotary_fraction != 1.0:
        rope["partial_rotary_factor"] = cfg.rotary_fraction
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_size, hidden_act=act,
                  max_position_embeddings=cfg.max_position_embeddings,
                  tie_word_embeddings=cfg.tie_embeddings, **ids)
    if "rope_parameters" in cls().to_dict():  # transformers >= 5
        common["rope_parameters"] = rope
    else:
        common["rope_theta"] = cfg.rope_theta
        if cfg.rope_scaling:
            common["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_theta",
                                                                                   "partial_rotary_factor")}
        if cfg.family == "gpt_neox":
            common.update(rotary_pct=cfg.rotary_fraction, rotary_emb_base=cfg.rope_theta)
    if cfg.family == "gpt_neox":
        return cls(layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.parallel_residual,
                   attention_bias=cfg.qkv_bias, **common)
    extra = dict(num_key_value_heads=cfg.kv_heads, rms_norm_eps=cfg.norm_eps)
    if cfg.family == "llama":
        extra.update(head_dim=cfg.dim_per_head, attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    elif cfg.dim_per_head != cfg.hidden_size // cfg.num_heads:
        extra["head_dim"] = cfg.dim_per_head
    return cls(**extra, **common)
