"""Weight-name tables per HF family and the param <-> HF state-dict conversion.

The weight layout of each family is one table below (`_FAMILIES`): our param path -> HF tensor
name and whether the matrix is transposed (torch `nn.Linear` stores [out, in], we store
[in, out]; GPT-2's `Conv1D` already stores [in, out]). Fused q/k/v tensors (GPT-2 `c_attn`,
GPT-NeoX `query_key_value`, whose rows are laid out per head as [H, 3, D]) are split on import
and re-fused on export. Expected HF shapes come from tracing the exporter over the model's
abstract params, so import checks every tensor's shape before touching it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rlhfjax.models.config import ModelConfig
from rlhfjax.models.transformer import init_params, stack_layers, unstack_layers


@dataclasses.dataclass(frozen=True)
class _Family:
    prefix: str  # base-model prefix in *ForCausalLM state dicts; checkpoints may omit it
    layer: str  # per-layer prefix, formatted with the layer index
    globals: dict[str, tuple[str, bool]]  # our path -> (hf name, transpose)
    per_layer: dict[str, tuple[str, bool]]
    lm_head: str  # hf name of an untied output projection (never prefixed)
    fused_qkv: str | None = None  # "gpt2" | "neox"
    fused_name: str = ""


def _norm(ours: str, hf: str, bias: bool = True) -> dict[str, tuple[str, bool]]:
    d = {f"{ours}/scale": (f"{hf}.weight", False)}
    if bias:
        d[f"{ours}/bias"] = (f"{hf}.bias", False)
    return d


def _linear(ours: str, hf: str, transpose: bool = True) -> dict[str, tuple[str, bool]]:
    return {f"{ours}/kernel": (f"{hf}.weight", transpose), f"{ours}/bias": (f"{hf}.bias", False)}


_LLAMA_LAYER = {
    **_norm("norm_attn", "input_layernorm", bias=False),
    **_norm("norm_mlp", "post_attention_layernorm", bias=False),
    **_linear("attn/q", "self_attn.q_proj"), **_linear("attn/k", "self_attn.k_proj"),
    **_linear("attn/v", "self_attn.v_proj"), **_linear("attn/o", "self_attn.o_proj"),
    **_linear("mlp/gate", "mlp.gate_proj"), **_linear("mlp/up", "mlp.up_proj"),
    **_linear("mlp/down", "mlp.down_proj"),
}
_LLAMA = _Family(prefix="model.", layer="layers.{}.",
                 globals={"embed/embedding": ("embed_tokens.weight", False), **_norm("final_norm", "norm", False)},
                 per_layer=_LLAMA_LAYER, lm_head="lm_head.weight")

_FAMILIES: dict[str, _Family] = {
    "gpt2": _Family(
        prefix="transformer.", layer="h.{}.",
        globals={"embed/embedding": ("wte.weight", False), "pos_embed/embedding": ("wpe.weight", False),
                 **_norm("final_norm", "ln_f")},
        per_layer={**_norm("norm_attn", "ln_1"), **_norm("norm_mlp", "ln_2"),
                   **_linear("attn/o", "attn.c_proj", transpose=False),
                   **_linear("mlp/fc_in", "mlp.c_fc", transpose=False),
                   **_linear("mlp/fc_out", "mlp.c_proj", transpose=False)},
        lm_head="lm_head.weight", fused_qkv="gpt2", fused_name="attn.c_attn"),
    "gpt_neox": _Family(
        prefix="gpt_neox.", layer="layers.{}.",
        globals={"embed/embedding": ("embed_in.weight", False), **_norm("final_norm", "final_layer_norm")},
        per_layer={**_norm("norm_attn", "input_layernorm"), **_norm("norm_mlp", "post_attention_layernorm"),
                   **_linear("attn/o", "attention.dense"), **_linear("mlp/fc_in", "mlp.dense_h_to_4h"),
                   **_linear("mlp/fc_out", "mlp.dense_4h_to_h")},
        lm_head="embed_out.weight", fused_qkv="neox", fused_name="attention.query_key_value"),
    "llama": _LLAMA,
    "qwen2": _LLAMA,
}


def _flat(params) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def to_hf_state_dict(cfg: ModelConfig, params) -> dict[str, jax.Array]:
    """HF *ForCausalLM tensor names -> arrays (jnp ops, so it also traces under eval_shape); scanned
    (stacked) params are split into HF's per-layer tensors."""
    if cfg.scan_layers:
        params, cfg = unstack_layers(params, cfg.num_layers), cfg.replace(scan_layers=False)
    fam = _FAMILIES[cfg.family]
    flat = _flat(params)
    out: dict[str, jax.Array] = {}
    for path, arr in flat.items():
        head, _, sub = path.partition("/")
        if head.startswith("layer_"):
            i = int(head.split("_")[1])
            if sub in fam.per_layer:
                name, transpose = fam.per_layer[sub]
                out[fam.prefix + fam.layer.format(i) + name] = arr.T if transpose else arr
        elif path == "lm_head/kernel":
            out[fam.lm_head] = arr.T
        else:
            name, transpose = fam.globals[path]
            out[fam.prefix + name] = arr.T if transpose else arr
    if fam.fused_qkv:
        H, D = cfg.num_heads, cfg.dim_per_head
        for i in range(cfg.num_layers):
            attn = params[f"layer_{i}"]["attn"]
            base = fam.prefix + fam.layer.format(i) + fam.fused_name
            parts = [attn[n] for n in ("q", "k", "v")]
            if fam.fused_qkv == "gpt2":  # Conv1D [in, 3*out], q|k|v blocks
                out[base + ".weight"] = jnp.concatenate([p["kernel"] for p in parts], axis=1)
                out[base + ".bias"] = jnp.concatenate([p["bias"] for p in parts])
            else:  # NeoX Linear [H*3*D, in], rows grouped per head
                E = parts[0]["kernel"].shape[0]
                w = jnp.stack([p["kernel"].T.reshape(H, D, E) for p in parts], axis=1)
                out[base + ".weight"] = w.reshape(3 * H * D, E)
                if cfg.qkv_bias:
                    out[base + ".bias"] = jnp.stack([p["bias"].reshape(H, D) for p in parts], 1).reshape(-1)
    return out


def from_hf_state_dict(cfg: ModelConfig, tensors: Mapping[str, np.ndarray], dtype=np.float32,
                       lm_head: bool = True):
    """Inverse of `to_hf_state_dict`, on host numpy arrays; expects names already normalised. Stacked for
    `cfg.scan_layers`."""
    if cfg.scan_layers:
        flat = from_hf_state_dict(cfg.replace(scan_layers=False), tensors, dtype, lm_head)
        return stack_layers(flat, cfg.num_layers)
    fam = _FAMILIES[cfg.family]
    expected = expected_param_shapes(cfg, lm_head)
    flat: dict[str, np.ndarray] = {}

    def get(name, transpose=False):
        arr = np.asarray(tensors[name]).astype(dtype)
        return arr.T if transpose else arr

    for path in expected:
        head, _, sub = path.partition("/")
        if head.startswith("layer_"):
            i = int(head.split("_")[1])
            if sub in fam.per_layer:
                name, transpose = fam.per_layer[sub]
                flat[path] = get(fam.prefix + fam.layer.format(i) + name, transpose)
        elif path == "lm_head/kernel":
            flat[path] = get(fam.lm_head, transpose=True)
        else:
            name, transpose = fam.globals[path]
            flat[path] = get(fam.prefix + name, transpose)
    if fam.fused_qkv:
        H, D = cfg.num_heads, cfg.dim_per_head
        for i in range(cfg.num_layers):
            base = fam.prefix + fam.layer.format(i) + fam.fused_name
            w = get(base + ".weight")
            b = get(base + ".bias") if base + ".bias" in tensors else None
            if fam.fused_qkv == "gpt2":
                ws, bs = np.split(w, 3, axis=1), np.split(b, 3)
            else:
                E = w.shape[1]
                w = w.reshape(H, 3, D, E)
                ws = [w[:, j].reshape(H * D, E).T for j in range(3)]
                bs = [b.reshape(H, 3, D)[:, j].reshape(-1) for j in range(3)] if b is not None else None
            for j, n in enumerate(("q", "k", "v")):
                flat[f"layer_{i}/attn/{n}/kernel"] = np.ascontiguousarray(ws[j])
                if bs is not None:
                    flat[f"layer_{i}/attn/{n}/bias"] = bs[j]
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def expected_param_shapes(cfg: ModelConfig, lm_head: bool = True) -> dict[str, tuple[int, ...]]:
    cfg = cfg.replace(scan_layers=False)  # the per-layer layout the weight tables name
    abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0), lm_head=lm_head))
    return {k: tuple(v.shape) for k, v in _flat(abstract).items()}


def expected_hf_shapes(cfg: ModelConfig, lm_head: bool = True) -> dict[str, tuple[int, ...]]:
    cfg = cfg.replace(scan_layers=False)
    abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0), lm_head=lm_head))
    return {k: tuple(v.shape) for k, v in jax.eval_shape(lambda p: to_hf_state_dict(cfg, p), abstract).items()}


def _params_for(cfg: ModelConfig, hf_name: str) -> str:
    """Our param path(s) that an HF tensor feeds, for error messages."""
    fam = _FAMILIES[cfg.family]
    name = hf_name[len(fam.prefix):] if hf_name.startswith(fam.prefix) else hf_name
    if name == fam.lm_head:
        return "lm_head/kernel"
    for path, (n, _) in fam.globals.items():
        if n == name:
            return path
    parts = name.split(".")
    for i in range(cfg.num_layers):
        lp = fam.layer.format(i)
        if name.startswith(lp):
            rest = name[len(lp):]
            if fam.fused_qkv and rest.startswith(fam.fused_name):
                return f"layer_{i}/attn/{{q,k,v}}/{'kernel' if rest.endswith('weight') else 'bias'}"
            for path, (n, _) in fam.per_layer.items():
                if n == rest:
                    return f"layer_{i}/{path}"
    return "/".join(parts)
