"""`ModelConfig`: one frozen dataclass that describes every supported decoder family.

The fields name architectural choices (norm kind, MLP kind, position scheme) rather than
families, so GPT-2, GPT-NeoX/Pythia, Llama and Qwen2 are points in one space and a new
family is usually a new preset, not new module code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# The families with presets and HF interop; per-block rematerialisation policies (`jax.checkpoint_policies`).
from rlhfjax.choices import MODEL_FAMILIES as SUPPORTED_FAMILIES, REMAT_POLICIES  # noqa: F401
from rlhfjax.errors import ConfigError

ACTIVATIONS = ("gelu_tanh", "gelu_exact", "silu", "relu")
ROPE_SCALINGS = (None, "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer.

    `family` records which HF `model_type` the weights map to (used by import/export);
    everything the forward pass needs is in the other fields.
    """

    family: str = "llama"
    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None  # None -> num_heads (multi-head attention)
    head_dim: int | None = None  # None -> hidden_size // num_heads
    intermediate_size: int | None = None  # None -> 4 * hidden_size
    max_position_embeddings: int = 2048

    norm: str = "rmsnorm"  # "layernorm" (with bias) | "rmsnorm"
    norm_eps: float = 1e-6
    mlp: str = "gated"  # "gated" (SwiGLU-style gate*up) | "plain" (fc_in -> act -> fc_out)
    activation: str = "silu"
    parallel_residual: bool = False  # GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x))

    position: str = "rope"  # "rope" | "learned"
    rope_theta: float = 10000.0
    rotary_fraction: float = 1.0  # GPT-NeoX partial rotary (Pythia: 0.25)
    rope_scaling: str | None = None  # None | "linear" | "llama3"
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0  # llama3 only
    rope_high_freq_factor: float = 4.0  # llama3 only
    rope_original_max_positions: int = 8192  # llama3 only

    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    tie_embeddings: bool = False

    dtype: str = "float32"  # activation / matmul dtype ("bfloat16" for fast training)
    param_dtype: str = "float32"
    # Execution choices (not architecture; HF checkpoints do not record them):
    scan_layers: bool = False  # one scanned block, params stacked on a leading `layers` axis (`stack_layers`)
    remat_policy: str = "none"  # per-block remat: none | nothing_saveable | dots_saveable | ... (REMAT_POLICIES)
    # Teacher-forced LM head, log-softmax, entropy and vocabulary KL over this many response positions at a time,
    # recomputed in the backward (`models.api.policy_outputs`): memory ~ batch × chunk × vocab instead of
    # batch × response × vocab. 0 = all positions at once (and the logits are returned).
    logits_chunk: int = 0

    # Tokens that are not part of the architecture but that users of a checkpoint need.
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.family not in SUPPORTED_FAMILIES:
            raise ConfigError(
                f"unsupported model family {self.family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}"
            )
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ConfigError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.mlp not in ("gated", "plain"):
            raise ConfigError(f"mlp must be 'gated' or 'plain', got {self.mlp!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.position not in ("rope", "learned"):
            raise ConfigError(f"position must be 'rope' or 'learned', got {self.position!r}")
        if self.rope_scaling not in ROPE_SCALINGS:
            raise ConfigError(f"rope_scaling must be one of {ROPE_SCALINGS}, got {self.rope_scaling!r}")
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.kv_heads}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ConfigError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
        if self.logits_chunk < 0:
            raise ConfigError(f"logits_chunk must be >= 0 (0 = no chunking), got {self.logits_chunk}")
        for name in ("dtype", "param_dtype"):
            jnp.dtype(getattr(self, name))  # fails early on a typo

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def rotary_dim(self) -> int:
        return int(self.dim_per_head * self.rotary_fraction)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self):
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**d)


def preset(family: str, **overrides: Any) -> ModelConfig:
    """Architecture switches of a family with small default sizes; override sizes as needed."""
    base: dict[str, dict[str, Any]] = {
        "gpt2": dict(norm="layernorm", norm_eps=1e-5, mlp="plain", activation="gelu_tanh",
                     position="learned", qkv_bias=True, attn_out_bias=True, mlp_bias=True,
                     tie_embeddings=True),
        "gpt_neox": dict(norm="layernorm", norm_eps=1e-5, mlp="plain", activation="gelu_exact",
                         parallel_residual=True, rotary_fraction=0.25, qkv_bias=True,
                         attn_out_bias=True, mlp_bias=True),
        "llama": dict(norm="rmsnorm", norm_eps=1e-6, mlp="gated", activation="silu"),
        "qwen2": dict(norm="rmsnorm", norm_eps=1e-6, mlp="gated", activation="silu",
                      qkv_bias=True),
    }
    if family not in base:
        raise ConfigError(
            f"unsupported model family {family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return ModelConfig(family=family, **{**base[family], **overrides})
