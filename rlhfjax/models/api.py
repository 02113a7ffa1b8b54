"""The model-call layer: every forward pass of an rlhfjax model outside `models/` goes through here.

Objectives, the sampler, experience collection and analyses ask for what they need — logits,
log-probs of chosen tokens, scores, values, block activations — and never call `.apply` themselves,
so a change of module system (e.g. Flax NNX) stays inside this folder.

Conventions shared by every function:
- `seq_BxL` / `mask_BxL`: token ids and their 0/1 validity mask; positions come from the mask, so
  left and right padding both work.
- Slot alignment: "the tokens at slots [start, L)" are predicted by the logits at slots
  [start − 1, L − 1); their log-probs come back as `*_BxN` with N = L − start, 0 where `mask` is 0.
- All log-probs are fp32 and go through `selected_logp`, the single log-softmax-and-gather.
- Functions are pure and jit-able; `cfg` (a frozen `ModelConfig`) is static.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhfjax.models.config import ModelConfig
from rlhfjax.models.heads import ScalarModel, ValueHead, last_token_index, read_at
from rlhfjax.models.transformer import (Block, DecoderOutput, Transformer, init_cache, lm_head_logits,
                                        positions_from_mask, unstack_layers)

FINAL_NORM = -1  # `activations` layer index of the final-norm output

__all__ = [
    "FINAL_NORM", "activations", "decode", "entropy", "forward", "init_cache", "lm_head_logits", "lm_logits",
    "over_positions", "policy_forward", "policy_outputs", "response_logp", "response_vocab_kl", "scores",
    "scores_and_response_logp", "selected_logp", "shifted_logp", "token_logp", "values", "vocab_kl",
]


# --------------------------------------------------------------------------------------------
# Forward passes


def forward(params, cfg: ModelConfig, seq_BxL, mask_BxL, *, lm_head: bool = True,
            head_slots: tuple[int, int] | None = None) -> DecoderOutput:
    """Full-sequence decoder forward → `DecoderOutput(logits BxLxV fp32 | None, hidden BxLxE)`; with
    `head_slots=(a, b)` the logits are those of slots [a, b) only (the LM head runs there alone)."""
    return Transformer(cfg, lm_head=lm_head, head_slots=head_slots).apply(
        {"params": params}, seq_BxL, positions_from_mask(mask_BxL), mask_BxL)


def lm_logits(params, cfg: ModelConfig, seq_BxL, mask_BxL):
    """LM logits at every slot (BxLxV fp32); slot t predicts token t + 1."""
    return forward(params, cfg, seq_BxL, mask_BxL).logits


def decode(params, cfg: ModelConfig, tokens_BxT, positions_BxT, mask_BxS, cache, cache_index, *,
           last_logits_only: bool = False) -> DecoderOutput:
    """Forward `tokens_BxT` into a KV cache at slots [cache_index, cache_index + T) (prefill or one
    decode step); `mask_BxS` covers the whole cache. Returns logits (of the last of the T slots only,
    Bx1xV, with `last_logits_only`: a prefill needs no others) and the updated cache."""
    T = tokens_BxT.shape[1]
    return Transformer(cfg, head_slots=(T - 1, T) if last_logits_only else None).apply(
        {"params": params}, tokens_BxT, positions_BxT, mask_BxS, cache=cache, cache_index=cache_index)


# --------------------------------------------------------------------------------------------
# Log-probs


def selected_logp(logits_xV, tokens_x):
    """log softmax(logits)[token] in fp32, for any leading shape: THE log-prob of the codebase."""
    logp = jax.nn.log_softmax(logits_xV.astype(jnp.float32), axis=-1)
    # A select against the token's one-hot pattern rather than a gather: the same values bit for bit, but
    # its gradient is a dense select instead of a scatter-add (a third less backward time in the LM head on
    # XLA:CPU, scripts/bench_update_parts.py).
    hit = tokens_x[..., None].astype(jnp.int32) == jnp.arange(logp.shape[-1], dtype=jnp.int32)
    return jnp.sum(jnp.where(hit, logp, 0.0), axis=-1)


def shifted_logp(logits_BxTxV, tokens_BxT):
    """log p(token_t | tokens_<t) aligned to the predicted token: BxT with [:, 0] = 0."""
    return jnp.pad(selected_logp(logits_BxTxV[:, :-1], tokens_BxT[:, 1:]), ((0, 0), (1, 0)))


def entropy(logits_xV):
    """H(softmax(logits)) over the last axis in fp32, for any leading shape; −inf logits contribute 0, no NaN."""
    logp = jax.nn.log_softmax(logits_xV.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(p * jnp.where(p > 0, logp, 0.0), axis=-1)


def vocab_kl(logits_a_xV, logits_b_xV):
    """KL(softmax(a) ‖ softmax(b)) over the last (vocabulary) axis in fp32, for any leading shape."""
    logp_a = jax.nn.log_softmax(logits_a_xV.astype(jnp.float32), axis=-1)
    logp_b = jax.nn.log_softmax(logits_b_xV.astype(jnp.float32), axis=-1)
    p_a = jnp.exp(logp_a)
    return jnp.sum(jnp.where(p_a > 0, p_a * (logp_a - logp_b), 0.0), axis=-1)


def over_positions(fn, chunk: int, *arrays_BxN):
    """`fn(*slices)` on `chunk` positions (axis 1) of every B×N×… array at a time, scanned, with each chunk's
    forward recomputed in the backward (`jax.checkpoint`) → fn's per-position outputs joined back to B×N×….

    What fn builds inside (a chunk's B×chunk×V logits) is live for one chunk only, forward and backward; the
    batch axis stays whole, so its sharding carries over. N need not be a multiple of `chunk` (the last chunk
    is padded, and its padding dropped)."""
    N = arrays_BxN[0].shape[1]
    n = -(-N // chunk)

    def split(x):  # B×N×… → n×B×chunk×…
        x = jnp.pad(x, [(0, 0), (0, n * chunk - N)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(x.shape[0], n, chunk, *x.shape[2:]), 1, 0)

    def join(y):  # n×B×chunk×… → B×N×…
        y = jnp.moveaxis(y, 0, 1)
        return y.reshape(y.shape[0], n * chunk, *y.shape[3:])[:, :N]

    body = jax.checkpoint(fn)
    _, out = jax.lax.scan(lambda carry, xs: (carry, body(*xs)), None, tuple(split(a) for a in arrays_BxN))
    return jax.tree.map(join, out)


def _backbone(lm_params):
    return {k: v for k, v in lm_params.items() if k != "lm_head"}


def _chunked_logp_entropy(params, cfg: ModelConfig, hidden_BxNxE, tokens_BxN, temperature: float = 1.0):
    """(log π_T(token), H(π_T)) at each position from the hidden states that predict the tokens, the LM head
    run `cfg.logits_chunk` positions at a time (`over_positions`)."""
    def stats(hidden_chunk, token_chunk):
        logits = lm_head_logits(params, cfg, hidden_chunk) / temperature
        return selected_logp(logits, token_chunk), entropy(logits)

    return over_positions(stats, cfg.logits_chunk, hidden_BxNxE, tokens_BxN)


def policy_outputs(params, cfg: ModelConfig, seq_BxL, mask_BxL, *, start: int, temperature: float = 1.0,
                   value_head=None) -> dict:
    """One policy forward → `{"logp_BxN", "entropy_BxN", "hidden_BxNxE"}`, plus `"logits_BxNxV"` unless the
    logits are chunked, plus `"values_BxN"` given `value_head`.

    `logp_BxN[:, j]` = log π_T(token at slot start + j | prefix) with π_T = softmax(logits / T), 0 where
    masked; `entropy_BxN` = H(π_T) there; `hidden_BxNxE` are the final-norm hidden states at the predicting
    slots (what `response_vocab_kl` recomputes logits from); `logits_BxNxV` are the T-scaled logits.
    `cfg.logits_chunk` > 0 (and < N): the LM head, log-softmax and entropy run `over_positions`, so no
    B×N×V array lives at once, forward or backward. `value_head` (params of a `ValueHead` on this policy)
    reads V(prefix) off the same final hidden states at the same slots: the state in which each token was
    chosen.
    """
    L = seq_BxL.shape[1]
    tokens, valid = seq_BxL[:, start:], mask_BxL[:, start:].astype(bool)
    if 0 < cfg.logits_chunk < L - start:
        hidden = forward(_backbone(params), cfg, seq_BxL, mask_BxL, lm_head=False).hidden[:, start - 1:L - 1]
        logp, ent = _chunked_logp_entropy(params, cfg, hidden, tokens, temperature)
        result = {"logp_BxN": jnp.where(valid, logp, 0.0), "entropy_BxN": ent, "hidden_BxNxE": hidden}
    else:
        out = forward(params, cfg, seq_BxL, mask_BxL, head_slots=(start - 1, L - 1))  # no logits over the prompt
        logits = out.logits.astype(jnp.float32) / temperature
        hidden = out.hidden[:, start - 1:L - 1]
        result = {"logp_BxN": jnp.where(valid, selected_logp(logits, tokens), 0.0), "entropy_BxN": entropy(logits),
                  "hidden_BxNxE": hidden, "logits_BxNxV": logits}
    if value_head is not None:
        v = ValueHead(cfg.weights_dtype).apply({"params": value_head}, hidden)
        result["values_BxN"] = jnp.where(valid, v, 0.0)
    return result


def policy_forward(params, value_head, seq_BxL, mask_BxL, *, model_cfg: ModelConfig, num_response: int,
                   temperature: float):
    """`policy_outputs` for the last `num_response` slots: the forward the rollout's log-prob phase and every
    loss share (the same function on both sides keeps a first minibatch's ratio exactly 1)."""
    return policy_outputs(params, model_cfg, seq_BxL, mask_BxL, start=seq_BxL.shape[1] - num_response,
                          temperature=temperature, value_head=value_head)


def response_vocab_kl(params_a, out_a: dict, params_b, out_b: dict, cfg: ModelConfig, *, temperature: float = 1.0):
    """KL(π_a ‖ π_b) over the vocabulary at each response position (BxN) from two `policy_outputs` of models
    of the same `cfg` on the same response slots: from their logits, or, when the logits are chunked,
    recomputed from their hidden states `over_positions`. Stop the gradient of a frozen side yourself."""
    if "logits_BxNxV" in out_a and "logits_BxNxV" in out_b:
        return vocab_kl(out_a["logits_BxNxV"], out_b["logits_BxNxV"])

    def kl(hidden_a, hidden_b):
        return vocab_kl(lm_head_logits(params_a, cfg, hidden_a) / temperature,
                        lm_head_logits(params_b, cfg, hidden_b) / temperature)

    return over_positions(kl, max(cfg.logits_chunk, 1), out_a["hidden_BxNxE"], out_b["hidden_BxNxE"])


def token_logp(params, cfg: ModelConfig, seq_BxL, mask_BxL, *, start: int = 1, temperature: float = 1.0):
    """log π_T of the tokens at slots [start, L): `logp_BxN`, 0 where masked."""
    return policy_outputs(params, cfg, seq_BxL, mask_BxL, start=start, temperature=temperature)["logp_BxN"]


def _row_sums(logp_BxN, mask_BxN):
    m = mask_BxN.astype(bool)
    return jnp.sum(jnp.where(m, logp_BxN, 0.0), axis=-1), jnp.sum(m, axis=-1).astype(jnp.float32)


def response_logp(params, cfg: ModelConfig, seq_BxL, mask_BxL, response_mask_BxL, *, temperature: float = 1.0):
    """(sum_B, count_B): summed log π_T of each row's response tokens and how many there are.

    `response_mask_BxL` marks the response tokens (slot 0 can never count: nothing predicts it).
    The mean log-prob is `sum / max(count, 1)`; losses keep the pair so their means stay exact.
    """
    logp = token_logp(params, cfg, seq_BxL, mask_BxL, start=1, temperature=temperature)
    return _row_sums(logp, response_mask_BxL[:, 1:] * mask_BxL[:, 1:])


# --------------------------------------------------------------------------------------------
# Scalar heads: reward-model scores and values


def _scalars(params, cfg: ModelConfig, seq_BxL, mask_BxL, lm_head: bool = False):
    return ScalarModel(cfg, lm_head=lm_head).apply({"params": params}, seq_BxL, positions_from_mask(mask_BxL),
                                                   mask_BxL, return_logits=lm_head)


def scores(params, cfg: ModelConfig, seq_BxL, mask_BxL):
    """Reward-model score of each row, read at its last real token (HF's convention): `score_B`."""
    return read_at(_scalars(params, cfg, seq_BxL, mask_BxL), last_token_index(mask_BxL))


def scores_and_response_logp(params, cfg: ModelConfig, seq_BxL, mask_BxL, response_mask_BxL):
    """A scalar model that kept its LM head: (score_B, response logp sum_B, count_B) in one forward (the LM head
    `cfg.logits_chunk` positions at a time when that is set, as `policy_outputs`)."""
    if cfg.logits_chunk:  # ScalarModel's backbone + head, with the LM head applied by chunks
        hidden = forward(_backbone(params["backbone"]), cfg, seq_BxL, mask_BxL, lm_head=False).hidden
        scalars = ValueHead(cfg.weights_dtype).apply({"params": params["head"]}, hidden)
        logp, _ = _chunked_logp_entropy(params["backbone"], cfg, hidden[:, :-1], seq_BxL[:, 1:])
    else:
        scalars, logits = _scalars(params, cfg, seq_BxL, mask_BxL, lm_head=True)
        logp = selected_logp(logits[:, :-1], seq_BxL[:, 1:])
    logp = jnp.where(mask_BxL[:, 1:].astype(bool), logp, 0.0)
    s, c = _row_sums(logp, response_mask_BxL[:, 1:] * mask_BxL[:, 1:])
    return read_at(scalars, last_token_index(mask_BxL)), s, c


def values(params, cfg: ModelConfig, seq_BxL, mask_BxL, *, start: int):
    """V(prefix) for each token at slots [start, L): scalars read at slot − 1, 0 where masked."""
    L = seq_BxL.shape[1]
    v = _scalars(params, cfg, seq_BxL, mask_BxL)[:, start - 1:L - 1]
    return jnp.where(mask_BxL[:, start:].astype(bool), v, 0.0)


# --------------------------------------------------------------------------------------------
# Activations (OOD detection, probes)


def activations(params, cfg: ModelConfig, seq_BxL, mask_BxL, layers: Sequence[int], *,
                scalar_model: bool = False) -> dict[int, jax.Array]:
    """{layer: BxLxE fp32}: the output of decoder block `layer` (`FINAL_NORM` = −1: after the final
    norm) of an LM (`scalar_model=False`, LM head optional in `params`) or a `ScalarModel`.

    Captured with `nn.intercept_methods`, so no mutable collection is needed. Scanned layers run unscanned
    here (params unstacked), since a scanned block is one traced call for every layer.
    """
    if cfg.scan_layers:
        params, cfg = unstack_layers(params, cfg.num_layers), cfg.replace(scan_layers=False)
    wanted = set(layers)
    captured: dict[int, jax.Array] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            module = context.module
            if isinstance(module, Block):
                i = int(module.name.rsplit("_", 1)[-1])
                if i in wanted:
                    captured[i] = out[0]  # Block returns (x, layer_cache)
            elif isinstance(module, Transformer) and FINAL_NORM in wanted:
                captured[FINAL_NORM] = out.hidden
        return out

    with nn.intercept_methods(interceptor):
        if scalar_model:
            _scalars(params, cfg, seq_BxL, mask_BxL)
        else:
            forward(_backbone(params), cfg, seq_BxL, mask_BxL, lm_head=False)  # activations never need logits
    missing = wanted - set(captured)
    if missing:
        raise ValueError(f"layers {sorted(missing)} not found in the model (blocks 0..{cfg.num_layers - 1}, "
                         f"{FINAL_NORM} = final norm)")
    return {i: captured[i].astype(jnp.float32) for i in layers}


# --------------------------------------------------------------------------------------------
# Params on a mesh: shardings from the logical axis names, created or placed already sharded

MODEL_KINDS = ("lm", "scalar", "scalar_lm", "value_head")  # value_head: a ValueHead on an LM of `cfg`


def _module_and_args(cfg: ModelConfig, kind: str):
    tokens = jnp.zeros((1, 1), jnp.int32)
    args = (tokens, tokens, jnp.ones_like(tokens))
    if kind == "lm":
        return Transformer(cfg), args
    if kind in ("scalar", "scalar_lm"):
        return ScalarModel(cfg, lm_head=kind == "scalar_lm"), args
    if kind == "value_head":
        return ValueHead(cfg.weights_dtype), (jnp.zeros((1, 1, cfg.hidden_size)),)
    raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")


def param_shardings(cfg: ModelConfig, mesh, kind: str = "lm"):
    """NamedShardings of a model's params from its logical axis names (nothing materialised)."""
    from rlhfjax import parallel

    module, args = _module_and_args(cfg, kind)
    return parallel.model_param_shardings(module, args, mesh)


def init_sharded(cfg: ModelConfig, rng, mesh, kind: str = "lm"):
    """Random params created already sharded on `mesh` (no full copy on one device) → (params, shardings)."""
    from rlhfjax import parallel

    module, args = _module_and_args(cfg, kind)
    return parallel.init_sharded(lambda r: module.init(r, *args)["params"], rng, mesh)


def place(params, shardings):
    """Host or device params onto `shardings`, as fresh buffers: trees placed separately never
    alias (the train state is donated, so a frozen copy of the same weights must not share it)."""
    import numpy as np

    return jax.tree.map(lambda x, s: jax.device_put(np.array(x), s), params, shardings)
