"""Flax Linen decoder-only transformer covering GPT-2, GPT-NeoX/Pythia, Llama and Qwen2.

Pure-functional: `Transformer(cfg).apply({"params": p}, tokens_BxT, positions_BxT, mask_BxS)`.

Conventions
- `mask_BxS` marks valid *key* slots (1 = real token). Without a cache S == T; with a cache S is
  the cache length and the caller passes the mask of the whole cache (prompt + tokens so far).
- Positions are explicit, so left padding works: pass `positions = cumsum(mask) - 1` (clipped
  at 0) and a real token sees the same positions however much padding precedes it.
- Causality is by *slot*: a query written at slot `cache_index + t` sees key slots <= it.
- Every parameter carries logical axis names (see `rlhfjax.parallel` for the mesh rules):
  `vocab`, `embed`, `heads` (q/o merged heads*head_dim), `kv` (k/v merged kv_heads*head_dim), `mlp`.
- Matmuls run in `cfg.dtype`; norms, softmax and rotary tables in fp32; logits come out fp32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax.models.config import ModelConfig

INIT_STD = 0.02
# {"layer_i": {"k": BxKxSxD, "v": BxKxSxD}} (K: KV heads, S: slots); scanned: {"layers": {"k": NxBxKxSxD, ...}}
Cache = dict[str, dict[str, jax.Array]]
SCANNED = "layers"  # the params (and cache) key of the scanned block, stacked on a leading layer axis


def _dense(features: int, axes: tuple[str | None, str | None], use_bias: bool, cfg: ModelConfig,
           name: str):
    """An `nn.Dense` (params `kernel`, `bias`) applied with `on_rows`."""
    layer = nn.Dense(
        features,
        use_bias=use_bias,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.weights_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
        name=name,
    )
    return lambda x: on_rows(layer, x)


def on_rows(fn, x):
    """`fn` over the rows of `x` viewed as (rows, features), reshaped back to x's leading axes.

    Every projection of a B×T×E activation goes through here. The weight gradient of `x @ W` on B×T×E
    contracts two axes, which XLA:CPU lays out with a transposed copy of the output gradient and duplicated
    elementwise work: a dense layer's forward + backward ran 2-3× slower than on the same rows as (B·T)×E
    (scripts/bench_update_parts.py --layers). "length" is never sharded, so the batch sharding carries over.
    """
    out = fn(x.reshape(-1, x.shape[-1]))
    return out.reshape(*x.shape[:-1], out.shape[-1])


class Norm(nn.Module):
    """LayerNorm (scale + bias) or RMSNorm (scale only), computed in fp32."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), cfg.weights_dtype)
        h = x.astype(jnp.float32)
        if cfg.norm == "layernorm":
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                              (x.shape[-1],), cfg.weights_dtype)
            mean = h.mean(-1, keepdims=True)
            var = jnp.square(h - mean).mean(-1, keepdims=True)
            h = (h - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
            out = h * scale.astype(jnp.float32) + bias.astype(jnp.float32)
            return out.astype(cfg.compute_dtype)
        h = h * jax.lax.rsqrt(jnp.square(h).mean(-1, keepdims=True) + cfg.norm_eps)
        # Llama casts back before the scale; keep that order so bf16 runs match HF's rounding.
        return scale.astype(cfg.compute_dtype) * h.astype(cfg.compute_dtype)


def rope_inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies for the rotary part of a head, including HF's rope scalings."""
    dim = cfg.rotary_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if cfg.rope_scaling == "linear":
        inv = inv / cfg.rope_scaling_factor
    elif cfg.rope_scaling == "llama3":
        factor, lo, hi = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        old_len = cfg.rope_original_max_positions
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_len / lo, inv / factor, inv)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)


def apply_rope(x_BxTxHxD, positions_BxT, cfg: ModelConfig):
    """Rotate-half RoPE (GPT-NeoX/Llama layout) on the first `cfg.rotary_dim` dims of each head."""
    rot = cfg.rotary_dim
    inv = jnp.asarray(rope_inverse_frequencies(cfg))
    angles = positions_BxT.astype(jnp.float32)[..., None] * inv  # BxTx(rot/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # BxTx1xrot
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x_rot, x_pass = x_BxTxHxD[..., :rot].astype(jnp.float32), x_BxTxHxD[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    out = (x_rot * cos + rotated * sin).astype(x_BxTxHxD.dtype)
    return jnp.concatenate([out, x_pass], axis=-1) if x_pass.shape[-1] else out


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxE, positions_BxT, mask_BxS, layer_cache, cache_index):
        cfg = self.cfg
        B, T, _ = x_BxTxE.shape
        H, K, D = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
        q = _dense(H * D, ("embed", "heads"), cfg.qkv_bias, cfg, "q")(x_BxTxE).reshape(B, T, H, D)
        k = _dense(K * D, ("embed", "kv"), cfg.qkv_bias, cfg, "k")(x_BxTxE).reshape(B, T, K, D)
        v = _dense(K * D, ("embed", "kv"), cfg.qkv_bias, cfg, "v")(x_BxTxE).reshape(B, T, K, D)
        if cfg.position == "rope":
            q, k = apply_rope(q, positions_BxT, cfg), apply_rope(k, positions_BxT, cfg)

        # Keys and values head-major (BxKxSxD), the layout the attention matmuls batch over: a cache kept
        # this way is read by every decode step as it is, where a BxSxKxD cache was transposed whole, per layer
        # and step (15% of a decode step's time on XLA:CPU, scripts/bench_ppo.py's generate phase).
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        if layer_cache is not None:
            start = (0, 0, cache_index, 0)
            k = jax.lax.dynamic_update_slice(layer_cache["k"], k.astype(layer_cache["k"].dtype), start)
            v = jax.lax.dynamic_update_slice(layer_cache["v"], v.astype(layer_cache["v"].dtype), start)
            layer_cache = {"k": k, "v": v}
        S = k.shape[2]
        q_slot_T = cache_index + jnp.arange(T)
        allowed_BxTxS = (jnp.arange(S)[None, None, :] <= q_slot_T[None, :, None]) & (
            mask_BxS[:, None, :].astype(bool))

        q = q.reshape(B, T, K, H // K, D)
        scores = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
        scores = scores / np.sqrt(D).astype(np.float32)
        scores = jnp.where(allowed_BxTxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
        out = jnp.einsum("bkgts,bksd->btkgd", probs, v.astype(cfg.compute_dtype)).reshape(B, T, H * D)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads"))
        return _dense(cfg.hidden_size, ("heads", "embed"), cfg.attn_out_bias, cfg, "o")(out), layer_cache


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        act = {
            "gelu_tanh": lambda h: jax.nn.gelu(h, approximate=True),
            "gelu_exact": lambda h: jax.nn.gelu(h, approximate=False),
            "silu": jax.nn.silu,
            "relu": jax.nn.relu,
        }[cfg.activation]
        if cfg.mlp == "gated":
            gate = _dense(cfg.mlp_size, ("embed", "mlp"), cfg.mlp_bias, cfg, "gate")(x)
            up = _dense(cfg.mlp_size, ("embed", "mlp"), cfg.mlp_bias, cfg, "up")(x)
            h = act(gate) * up
            h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
            return _dense(cfg.hidden_size, ("mlp", "embed"), cfg.mlp_bias, cfg, "down")(h)
        h = act(_dense(cfg.mlp_size, ("embed", "mlp"), cfg.mlp_bias, cfg, "fc_in")(x))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return _dense(cfg.hidden_size, ("mlp", "embed"), cfg.mlp_bias, cfg, "fc_out")(h)


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, positions_BxT, mask_BxS, layer_cache, cache_index):
        attn_out, layer_cache = Attention(self.cfg, name="attn")(
            Norm(self.cfg, name="norm_attn")(x), positions_BxT, mask_BxS, layer_cache, cache_index)
        if self.cfg.parallel_residual:
            x = x + attn_out + MLP(self.cfg, name="mlp")(Norm(self.cfg, name="norm_mlp")(x))
        else:
            x = x + attn_out
            x = x + MLP(self.cfg, name="mlp")(Norm(self.cfg, name="norm_mlp")(x))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), layer_cache


@flax.struct.dataclass
class DecoderOutput:
    logits: jax.Array | None  # BxTxV fp32 (the `head_slots` only, if given), None without an LM head
    hidden: jax.Array  # BxTxE after the final norm
    cache: Any = None  # updated KV cache when one was passed


class Transformer(nn.Module):
    """Decoder-only LM. `lm_head=False` gives the backbone used under scalar heads.

    Each block's output is sown into the `intermediates` collection as `hidden_{i}`, readable with
    `apply(..., mutable=["intermediates"])` (a no-op otherwise, so training pays nothing; unscanned layout
    only: `models.api.activations` reads any layout).
    """

    cfg: ModelConfig
    lm_head: bool = True
    # (a, b): the LM head runs on slots [a, b) only, so `logits` is Bx(b−a)xV. A teacher-forced loss needs the
    # logits that predict the response alone; the prompt's would be most of the head's FLOPs and memory.
    head_slots: tuple[int, int] | None = None

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT, mask_BxS, cache: Cache | None = None,
                 cache_index=0) -> DecoderOutput:
        cfg = self.cfg
        embed = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD),
                                                        ("vocab", "embed")),
            name="embed")
        x = embed(tokens_BxT)
        if cfg.position == "learned":
            pos_embed = nn.Embed(
                cfg.max_position_embeddings, cfg.hidden_size, dtype=cfg.compute_dtype,
                param_dtype=cfg.weights_dtype,
                embedding_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STD / 2),
                                                            (None, "embed")),
                name="pos_embed")
            x = x + pos_embed(positions_BxT)
        x = nn.with_logical_constraint(x.astype(cfg.compute_dtype), ("batch", "length", "embed"))

        block = _block_class(cfg)
        if cfg.scan_layers:  # one block traced once, scanned over its stacked params (and stacked cache)
            scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                              in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast), length=cfg.num_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            x, stacked = scanned(cfg, name=SCANNED)(x, positions_BxT, mask_BxS,
                                                    None if cache is None else cache[SCANNED], cache_index)
            new_cache = None if cache is None else {SCANNED: stacked}
        else:
            new_cache = {} if cache is not None else None
            for i in range(cfg.num_layers):
                name = f"layer_{i}"
                x, layer_cache = block(cfg, name=name)(
                    x, positions_BxT, mask_BxS, None if cache is None else cache[name], cache_index)
                self.sow("intermediates", f"hidden_{i}", x)
                if cache is not None:
                    new_cache[name] = layer_cache
        hidden = Norm(cfg, name="final_norm")(x)

        logits = None
        if self.lm_head:
            at = hidden if self.head_slots is None else hidden[:, self.head_slots[0]:self.head_slots[1]]
            if cfg.tie_embeddings:
                logits = on_rows(embed.attend, at)
            else:
                logits = _dense(cfg.vocab_size, ("embed", "vocab"), False, cfg, "lm_head")(at)
            logits = _fp32_logits(logits)
        return DecoderOutput(logits=logits, hidden=hidden, cache=new_cache)


def _fp32_logits(logits_BxTxV):
    return nn.with_logical_constraint(logits_BxTxV.astype(jnp.float32), ("batch", "length", "vocab"))


def lm_head_logits(params, cfg: ModelConfig, hidden_BxTxE):
    """The LM head alone on final-norm hidden states → fp32 logits BxTxV, the same computation `Transformer`
    runs after its final norm (tied: the embedding's `attend`; untied: `lm_head`), for callers that hold the
    hidden states and want the logits of a few positions at a time."""
    if cfg.tie_embeddings:
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        logits = on_rows(lambda x: embed.apply({"params": params["embed"]}, x, method="attend"), hidden_BxTxE)
    else:
        dense = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        logits = on_rows(lambda x: dense.apply({"params": params["lm_head"]}, x), hidden_BxTxE)
    return _fp32_logits(logits)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> Cache:
    """Zeroed KV cache for `length` slots (stacked on a leading layer axis for scanned layers)."""
    dtype = dtype or cfg.compute_dtype
    shape = (batch, cfg.kv_heads, length, cfg.dim_per_head)  # BxKxSxD
    if cfg.scan_layers:
        shape = (cfg.num_layers, *shape)
        return {SCANNED: {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}}
    return {f"layer_{i}": {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
            for i in range(cfg.num_layers)}


def _block_class(cfg: ModelConfig):
    """`Block`, wrapped in `nn.remat` with `cfg.remat_policy` (the backward pass recomputes what the
    policy does not save)."""
    if cfg.remat_policy == "none":
        return Block
    policy = getattr(jax.checkpoint_policies, cfg.remat_policy)
    return nn.remat(Block, policy=policy, prevent_cse=not cfg.scan_layers)  # scan already blocks CSE


def stack_layers(params, num_layers: int):
    """Per-layer params (`layer_0` … `layer_{n-1}`, at any depth: LM, ScalarModel backbone) → one
    `layers` entry whose leaves are stacked on a leading axis: the layout of `scan_layers=True`."""
    if not isinstance(params, dict):
        return params
    if "layer_0" not in params:
        return {k: stack_layers(v, num_layers) for k, v in params.items()}
    names = [f"layer_{i}" for i in range(num_layers)]
    stacked = jax.tree.map(lambda *xs: (np.stack if isinstance(xs[0], np.ndarray) else jnp.stack)(xs),
                           *[params[n] for n in names])
    return {**{k: v for k, v in params.items() if k not in names}, SCANNED: stacked}


def unstack_layers(params, num_layers: int):
    """The inverse of `stack_layers`: `layers` → `layer_0` … `layer_{n-1}`."""
    if not isinstance(params, dict):
        return params
    if SCANNED not in params:
        return {k: unstack_layers(v, num_layers) for k, v in params.items()}
    rest = {k: v for k, v in params.items() if k != SCANNED}
    return {**rest, **{f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], params[SCANNED]) for i in range(num_layers)}}


def positions_from_mask(mask_BxT):
    """Positions that ignore left padding: 0 at each row's first real token."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


def init_params(cfg: ModelConfig, rng: jax.Array, lm_head: bool = True):
    """Random params (unboxed) for a config, e.g. for tests and from-scratch toy models."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = Transformer(cfg, lm_head=lm_head).init(rng, tokens, tokens, jnp.ones_like(tokens))
    return nn.meta.unbox(variables["params"])
