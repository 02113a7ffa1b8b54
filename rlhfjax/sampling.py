"""Jitted KV-cache sampler: prefill a left-padded prompt batch, then decode inside one while_loop.

Layout: cache slots [0, P) hold the prompt (left-padded, so slot P-1 is every row's last prompt
token), generated token j goes to slot P+j. Positions ignore padding: generated token j of a row
has position (real prompt tokens of the row + j). Rows stop at EOS (which is kept and masked 1);
everything after is `pad_id` with mask 0. The loop exits early once every row is done.

Two log-probs per token: `logp_BxN` under the distribution actually sampled from (temperature,
top-k, top-p applied; 0 for greedy, a point mass) and `policy_logp_BxN` under the unmodified
policy (temperature 1, no truncation). Trainers do not use either: PPO's ratio and KL, and every
other objective, recompute log-probs by teacher forcing (`models.api.token_logp` at the rollout
temperature), so the loss and the experience share one computation; the sampler's own log-probs
serve as a check on the KV-cache decode (`rollout/logp_mismatch`).

`num_samples` > 1 draws that many completions per prompt: the prompt batch is repeated
row-wise, so rows [i·n, (i+1)·n) are the samples of prompt i (groups stay together).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from rlhfjax.models import ModelConfig, api, init_cache, positions_from_mask

NEG_INF = -1e30  # finite, so log_softmax over a truncated row stays NaN-free


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    eos_id: int | None = None  # None = never stop early
    pad_id: int = 0

    def __post_init__(self):
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"need top_k >= 0 and max_new_tokens >= 1, got {self.top_k}, {self.max_new_tokens}")


@flax.struct.dataclass
class Rollout:
    tokens_BxN: jax.Array  # generated tokens, pad after EOS
    response_mask_BxN: jax.Array  # 1 up to and including EOS
    logp_BxN: jax.Array  # log-prob under the sampling distribution (0 where masked)
    policy_logp_BxN: jax.Array  # log-prob under the raw policy, temperature 1 (0 where masked)
    sequence_BxL: jax.Array  # prompt + response, L = P + N, for teacher forcing
    sequence_mask_BxL: jax.Array


def process_logits(logits_BxV: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Logits of the sampling distribution: temperature, then top-k, then top-p (nucleus)."""
    logits = logits_BxV.astype(jnp.float32) / cfg.temperature
    V = logits.shape[-1]
    if 0 < cfg.top_k < V:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if cfg.top_p < 1.0:
        sorted_desc = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # Smallest prefix with mass >= top_p: keep a token if the mass before it is < top_p.
        keep = mass_before < cfg.top_p
        cutoff = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, NEG_INF, logits)
    return logits


def first_argmax(x_BxV):
    """jnp.argmax over the last axis (the first index of the maximum) as a max, then a min over the indices
    that reach it: two plain reductions, where argmax's (value, index) reduction ran 2.7× slower on XLA:CPU.
    Rows must be NaN-free (logits are)."""
    top = jnp.max(x_BxV, axis=-1, keepdims=True)
    V = x_BxV.shape[-1]
    return jnp.min(jnp.where(x_BxV == top, jnp.arange(V, dtype=jnp.int32), V), axis=-1)


def categorical(rng, logits_BxV):
    """The token `jax.random.categorical(rng, logits_BxV)` draws, bit for bit (the same Gumbel noise, the same
    first maximum), in a third of its time on XLA:CPU (0.65 vs 2.0 ms for 32 × 4,096 logits; docs/benchmarks.md)."""
    return first_argmax(logits_BxV + jax.random.gumbel(rng, logits_BxV.shape, logits_BxV.dtype))


def _pick(logits_BxV, rng, cfg: SamplingConfig):
    """(token, logp under the sampling distribution, logp under the raw policy)."""
    policy_logp = lambda t: api.selected_logp(logits_BxV, t)  # noqa: E731
    if cfg.greedy:
        tok = first_argmax(logits_BxV)
        return tok, jnp.zeros(tok.shape, jnp.float32), policy_logp(tok)
    processed = process_logits(logits_BxV, cfg)
    tok = categorical(rng, processed)
    return tok, api.selected_logp(processed, tok), policy_logp(tok)


@functools.partial(jax.jit, static_argnames=("model_cfg", "cfg", "num_samples"))
def sample(params, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array, rng: jax.Array, *,
           model_cfg: ModelConfig, cfg: SamplingConfig, num_samples: int = 1) -> Rollout:
    """Sample `cfg.max_new_tokens` tokens per left-padded prompt row. Deterministic in `rng`.

    With `num_samples` = n, every prompt row is repeated n times first (B·n rows, grouped).
    Every row needs at least one real prompt token. Params may be sharded; run under
    `rlhfjax.parallel.activate(mesh)` to also shard activations by the logical rules.
    """
    if num_samples > 1:
        prompt_BxP = jnp.repeat(prompt_BxP, num_samples, axis=0)
        prompt_mask_BxP = jnp.repeat(prompt_mask_BxP, num_samples, axis=0)
    B, P = prompt_BxP.shape
    N = cfg.max_new_tokens
    L = P + N
    prompt_mask = prompt_mask_BxP.astype(jnp.int32)
    mask_BxL = jnp.concatenate([prompt_mask, jnp.zeros((B, N), jnp.int32)], axis=1)
    cache = init_cache(model_cfg, B, L)
    # Prompts are left-padded, so slot P − 1 holds every row's last prompt token: its logits are all we need.
    out = api.decode(params, model_cfg, prompt_BxP.astype(jnp.int32), positions_from_mask(prompt_mask), mask_BxL,
                     cache, 0, last_logits_only=True)
    prompt_len_B = prompt_mask.sum(axis=1)

    init = dict(
        j=jnp.zeros((), jnp.int32), cache=out.cache, logits=out.logits[:, -1], mask=mask_BxL,
        done=jnp.zeros((B,), bool), tokens=jnp.full((B, N), cfg.pad_id, jnp.int32),
        resp_mask=jnp.zeros((B, N), jnp.int32), logp=jnp.zeros((B, N), jnp.float32),
        policy_logp=jnp.zeros((B, N), jnp.float32))

    def cond(c):
        return (c["j"] < N) & ~jnp.all(c["done"])

    def body(c):
        j = c["j"]
        tok, logp, plogp = _pick(c["logits"], jax.random.fold_in(rng, j), cfg)
        active = ~c["done"]
        tok = jnp.where(active, tok, cfg.pad_id)
        a = active.astype(jnp.int32)
        done = c["done"] | (active & (tok == cfg.eos_id)) if cfg.eos_id is not None else c["done"]
        put = lambda buf, v: jax.lax.dynamic_update_slice(buf, v[:, None].astype(buf.dtype), (0, j))  # noqa: E731
        mask = jax.lax.dynamic_update_slice(c["mask"], a[:, None], (0, P + j))
        # Feed the new token to get next-step logits (the last iteration's forward is unused).
        step = api.decode(params, model_cfg, tok[:, None], (prompt_len_B + j)[:, None], mask, c["cache"], P + j)
        return dict(
            j=j + 1, cache=step.cache, logits=step.logits[:, 0], mask=mask, done=done,
            tokens=put(c["tokens"], tok), resp_mask=put(c["resp_mask"], a),
            logp=put(c["logp"], jnp.where(active, logp, 0.0)),
            policy_logp=put(c["policy_logp"], jnp.where(active, plogp, 0.0)))

    c = jax.lax.while_loop(cond, body, init)
    return Rollout(
        tokens_BxN=c["tokens"], response_mask_BxN=c["resp_mask"], logp_BxN=c["logp"],
        policy_logp_BxN=c["policy_logp"],
        sequence_BxL=jnp.concatenate([prompt_BxP.astype(jnp.int32), c["tokens"]], axis=1),
        sequence_mask_BxL=jnp.concatenate([prompt_mask, c["resp_mask"]], axis=1))
