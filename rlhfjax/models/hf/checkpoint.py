"""Hugging Face interop: config.json + safetensors <-> (ModelConfig, params).

`load_pretrained("gpt2")` or `load_pretrained("/path/to/dir")` reads single or sharded
safetensors checkpoints of GPT-2, GPT-NeoX/Pythia, Llama and Qwen2; `save_pretrained` writes a
directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

The weight layout of each family is one table below (`_FAMILIES`): our param path -> HF tensor
name and whether the matrix is transposed (torch `nn.Linear` stores [out, in], we store
[in, out]; GPT-2's `Conv1D` already stores [in, out]). Fused q/k/v tensors (GPT-2 `c_attn`,
GPT-NeoX `query_key_value`, whose rows are laid out per head as [H, 3, D]) are split on import
and re-fused on export. Expected HF shapes come from tracing the exporter over the model's
abstract params, so import checks every tensor's shape before touching it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rlhfjax.models.hf import safetensors_io
from rlhfjax.models.config import SUPPORTED_FAMILIES, ModelConfig, preset
from rlhfjax.models.transformer import init_params

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"


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

# Non-parameter buffers that old checkpoints carry; safe to ignore.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
                     "rotary_emb.inv_freq")


# ----------------------------------------------------------------------------- config mapping

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
        raise ValueError(f"unsupported rope scaling type {kind!r}; supported: default, linear, llama3")
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
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS_FROM_HF)}")
    return _ACTIVATIONS_FROM_HF[name]


def config_from_hf(hf, **overrides: Any) -> ModelConfig:
    """ModelConfig from a transformers `PretrainedConfig` of a supported family."""
    family = hf.model_type
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"unsupported model_type {family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    ids = _token_ids(hf)
    if family == "gpt2":
        if getattr(hf, "scale_attn_by_inverse_layer_idx", False) or not getattr(hf, "scale_attn_weights", True):
            raise ValueError("GPT-2 checkpoints with non-standard attention scaling are not supported")
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
            raise ValueError("Qwen2 checkpoints with use_sliding_window=True are not supported")
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


# ----------------------------------------------------------------------------- weights mapping

def _flat(params) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def to_hf_state_dict(cfg: ModelConfig, params) -> dict[str, jax.Array]:
    """HF *ForCausalLM tensor names -> arrays (jnp ops, so it also traces under eval_shape)."""
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
    """Inverse of `to_hf_state_dict`, on host numpy arrays; expects names already normalised."""
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
    abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0), lm_head=lm_head))
    return {k: tuple(v.shape) for k, v in _flat(abstract).items()}


def expected_hf_shapes(cfg: ModelConfig, lm_head: bool = True) -> dict[str, tuple[int, ...]]:
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


# ----------------------------------------------------------------------------- checkpoint files

class _Checkpoint(Mapping):
    """All tensors of a single or sharded safetensors checkpoint directory, by name."""

    def __init__(self, directory: str):
        index = os.path.join(directory, SAFE_INDEX)
        single = os.path.join(directory, SAFE_SINGLE)
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = {fn: safetensors_io.SafetensorsFile(os.path.join(directory, fn))
                     for fn in sorted(set(weight_map.values()))}
            self._where = {name: files[fn] for name, fn in weight_map.items()}
        elif os.path.exists(single):
            f = safetensors_io.SafetensorsFile(single)
            self._where = {name: f for name in f}
        else:
            found = sorted(os.listdir(directory))
            raise FileNotFoundError(
                f"no {SAFE_SINGLE} or {SAFE_INDEX} in {directory} (found: {found}); rlhfjax reads "
                "safetensors only — re-save a PyTorch checkpoint with `save_pretrained(..., "
                "safe_serialization=True)`")

    def __getitem__(self, name):
        return self._where[name][name]

    def shape(self, name):
        return self._where[name].shape(name)

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)


class _Renamed(Mapping):
    """View of a checkpoint with base-model prefixes added where a checkpoint omitted them
    (the hub's `gpt2` stores `h.0...` rather than `transformer.h.0...`)."""

    def __init__(self, ckpt: _Checkpoint, prefix: str, top_level: tuple[str, ...]):
        self._ckpt = ckpt
        self._names = {}
        for name in ckpt:
            full = name if (name.startswith(prefix) or name in top_level) else prefix + name
            self._names[full] = name

    def __getitem__(self, name):
        return self._ckpt[self._names[name]]

    def shape(self, name):
        return self._ckpt.shape(self._names[name])

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def _resolve(name_or_path: str, revision: str | None) -> str:
    """A local directory as is; otherwise download config + safetensors from the hub."""
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return expanded
    if expanded.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"no such checkpoint directory: {name_or_path!r}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id=name_or_path, revision=revision,
            allow_patterns=["config.json", "*.safetensors", SAFE_INDEX, "generation_config.json"])
    except Exception as e:  # noqa: BLE001 — re-raised with what the user can do about it
        raise OSError(
            f"could not fetch {name_or_path!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            f"If you have no network, download it elsewhere (e.g. `hf download "
            f"{name_or_path}`) and pass the local directory path instead of the hub id."
        ) from e


def load_hf_config(name_or_path: str, revision: str | None = None):
    """(local directory, transformers PretrainedConfig) for a hub id or directory."""
    directory = _resolve(name_or_path, revision)
    with open(os.path.join(directory, "config.json")) as f:
        raw = json.load(f)
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_FAMILIES:
        raise ValueError(f"{name_or_path}: unsupported model_type {model_type!r}; "
                         f"supported: {', '.join(SUPPORTED_FAMILIES)}")
    import transformers

    return directory, transformers.AutoConfig.from_pretrained(directory)


def _validate(source: str, cfg: ModelConfig, tensors: _Renamed, want: dict[str, tuple[int, ...]],
              ignore: tuple[str, ...] = ()):
    """Fail on missing, unused or wrongly shaped tensors before any is converted."""
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise ValueError(f"{source}: checkpoint lacks {len(missing)} tensor(s) the config needs: "
                         f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    unexpected = sorted(n for n in set(tensors) - set(want)
                        if not n.endswith(_IGNORED_SUFFIXES) and n not in ignore)
    if unexpected:
        raise ValueError(f"{source}: checkpoint has {len(unexpected)} tensor(s) a {cfg.family} "
                         f"model does not use: {', '.join(unexpected[:8])}")
    for name, shape in want.items():
        got = tuple(tensors.shape(name))
        if got != shape:
            raise ValueError(f"{source}: tensor {name!r} (rlhfjax param {_params_for(cfg, name)}) "
                             f"has shape {got} in the checkpoint but the config expects {shape}")


def load_pretrained(name_or_path: str, *, dtype: str = "float32", param_dtype: str = "float32",
                    revision: str | None = None) -> tuple[ModelConfig, dict]:
    """Load `(ModelConfig, params)` of a causal LM from a hub id or a local HF checkpoint directory.

    `dtype` is the compute dtype written into the config; params are stored in `param_dtype`
    as host numpy arrays (place them with `jax.device_put` or `rlhfjax.parallel`).
    """
    directory, hf = load_hf_config(name_or_path, revision)
    cfg = config_from_hf(hf, dtype=dtype, param_dtype=param_dtype)
    fam = _FAMILIES[cfg.family]
    tensors = _Renamed(_Checkpoint(directory), fam.prefix, (fam.lm_head,))
    # Tied checkpoints sometimes store the (duplicate) output matrix anyway.
    _validate(name_or_path, cfg, tensors, expected_hf_shapes(cfg),
              ignore=(fam.lm_head,) if cfg.tie_embeddings else ())
    return cfg, from_hf_state_dict(cfg, tensors, dtype=np.dtype(cfg.weights_dtype))


SCORE = "score.weight"  # the [num_labels, hidden] head of HF *ForSequenceClassification models


def load_pretrained_scalar(name_or_path: str, *, dtype: str = "float32", param_dtype: str = "float32",
                           revision: str | None = None) -> tuple[ModelConfig, dict]:
    """Load a reward/value model saved as an HF *ForSequenceClassification checkpoint with
    num_labels=1, as `(ModelConfig, ScalarModel params)`. HF reads it at each row's last non-pad
    token: use `read_at(scalars, last_token_index(mask))` for the same number."""
    directory, hf = load_hf_config(name_or_path, revision)
    cfg = config_from_hf(hf, dtype=dtype, param_dtype=param_dtype)
    fam = _FAMILIES[cfg.family]
    tensors = _Renamed(_Checkpoint(directory), fam.prefix, (fam.lm_head, SCORE))
    want = {**expected_hf_shapes(cfg, lm_head=False), SCORE: (1, cfg.hidden_size)}
    _validate(name_or_path, cfg, tensors, want)
    wdtype = np.dtype(cfg.weights_dtype)
    backbone = from_hf_state_dict(cfg, tensors, dtype=wdtype, lm_head=False)
    head = {"kernel": np.asarray(tensors[SCORE]).astype(wdtype).T, "bias": np.zeros((1,), wdtype)}
    return cfg, {"backbone": backbone, "head": head}


def _write_checkpoint(hf_config, tensors: dict[str, np.ndarray], path: str, max_shard_bytes: int,
                      tokenizer) -> str:
    os.makedirs(path, exist_ok=True)
    hf_config.save_pretrained(path)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        if shards[-1] and size + tensors[name].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += tensors[name].nbytes
    if len(shards) == 1:
        safetensors_io.write(os.path.join(path, SAFE_SINGLE), shards[0])
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            safetensors_io.write(os.path.join(path, fn), shard)
            weight_map.update({n: fn for n in shard})
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
        with open(os.path.join(path, SAFE_INDEX), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


_ARCH_NAMES = {"gpt2": "GPT2", "gpt_neox": "GPTNeoX", "llama": "Llama", "qwen2": "Qwen2"}


def _host(tree, dtype: str) -> dict[str, np.ndarray]:
    np_dtype = np.dtype(jnp.dtype(dtype))
    return {k: np.asarray(jax.device_get(v)).astype(np_dtype) for k, v in tree.items()}


def save_pretrained(cfg: ModelConfig, params, path: str, *, dtype: str = "float32",
                    max_shard_bytes: int = 4 << 30, tokenizer=None) -> str:
    """Write `path/` as a HF causal-LM checkpoint (config.json + safetensors, sharded above
    `max_shard_bytes`); `transformers.AutoModelForCausalLM.from_pretrained(path)` loads it."""
    hf_config = config_to_hf(cfg)
    hf_config.architectures = [_ARCH_NAMES[cfg.family] + ("LMHeadModel" if cfg.family == "gpt2"
                                                          else "ForCausalLM")]
    tensors = _host(to_hf_state_dict(cfg, params), dtype)
    return _write_checkpoint(hf_config, tensors, path, max_shard_bytes, tokenizer)


def save_pretrained_scalar(cfg: ModelConfig, params, path: str, *, dtype: str = "float32",
                           max_shard_bytes: int = 4 << 30, tokenizer=None, drop_bias: bool = False) -> str:
    """Write ScalarModel params as an HF *ForSequenceClassification checkpoint (num_labels=1).

    HF's `score` layer has no bias. A reward model's bias never changes a comparison
    (r_A − r_B), so `drop_bias=True` drops it; otherwise a non-zero bias is an error."""
    bias = np.asarray(jax.device_get(params["head"]["bias"]))
    if np.any(bias != 0) and not drop_bias:
        raise ValueError(f"the scalar head has bias {bias.tolist()}, which HF's bias-free `score` layer "
                         "cannot hold; fold it into your reward normalisation before exporting")
    if cfg.pad_token_id is None:
        raise ValueError("set cfg.pad_token_id: HF sequence classifiers find each row's last token by it")
    hf_config = config_to_hf(cfg)
    hf_config.num_labels = 1
    hf_config.architectures = [_ARCH_NAMES[cfg.family] + "ForSequenceClassification"]
    tensors = _host(to_hf_state_dict(cfg, params["backbone"]), dtype)
    tensors[SCORE] = np.asarray(jax.device_get(params["head"]["kernel"])).T.astype(tensors[next(iter(tensors))].dtype)
    # *ForSequenceClassification state dicts use the base-model prefix for every backbone tensor.
    return _write_checkpoint(hf_config, tensors, path, max_shard_bytes, tokenizer)


def load_tokenizer(name_or_path: str, revision: str | None = None):
    """`transformers.AutoTokenizer` from a hub id or directory, with a pad token guaranteed
    (falls back to EOS, the usual choice for GPT-2/Pythia/Llama which ship none)."""
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(os.path.expanduser(name_or_path), revision=revision)
    except OSError as e:
        raise OSError(f"could not load a tokenizer from {name_or_path!r}: {e}. Pass a local directory "
                      "holding tokenizer files if you have no network.") from e
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
