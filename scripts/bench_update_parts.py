"""Where a PPO optimizer step's time goes: the policy's forward + backward, the value model's, the optimizer,
and the whole step, each jitted on its own and timed, with XLA's FLOPs and % of a matmul timed in the same run.

    python scripts/bench_update_parts.py --shape matmul-bound
    python scripts/bench_update_parts.py --shape toy --batch 16 --prompt-len 16 --response-len 24
    python scripts/bench_update_parts.py --layers    # one block's pieces, and a dense layer on 3-D vs 2-D rows

One minibatch of random experience at `bench_ppo`'s shapes (`bench_ppo.build`), the recipe's loss
(`objectives.ppo.loss_fn`) split into its two halves by zeroing the other half's coefficient would change
the program, so the halves are the two models' own forward + backward: the policy's clipped surrogate
and the value model's clipped value loss (`value_coef` = 1 here), as `jax.value_and_grad` of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ppo  # noqa: E402

from rlhfjax.models import api  # noqa: E402
from rlhfjax.objectives import ppo as ppo_objective  # noqa: E402
from rlhfjax.train.update import apply_update  # noqa: E402


def _time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def one_minibatch(args):
    """(train state, loss config, batch): `bench_ppo`'s models at `args`' shape and one minibatch of random
    experience (old log-probs and values from the models themselves, random advantages and returns)."""
    ns = argparse.Namespace(**vars(args), epochs=1, minibatches=1, remat=False, remat_policy="nothing_saveable",
                            first_ratio="own_logp", scan_layers=False, logits_chunk=0)
    setup, state, _, lcfg, _ = bench_ppo.build(ns)
    cfg, B, N, L = lcfg.policy_model, args.batch, args.response_len, args.prompt_len + args.response_len
    rng = np.random.default_rng(0)
    seq = jnp.asarray(rng.integers(4, cfg.vocab_size, (B, L)), jnp.int32)
    ones = jnp.ones((B, L), jnp.int32)
    params = state.train.params
    kw = dict(model_cfg=cfg, num_response=N, temperature=lcfg.temperature)
    old = api.policy_forward(params["policy"], None, seq, ones, **kw)["logp_BxN"]
    f32 = lambda: jnp.asarray(rng.normal(size=(B, N)), jnp.float32)  # noqa: E731
    batch = {"sequence_BxL": seq, "sequence_mask_BxL": ones, "response_mask_BxN": jnp.ones((B, N), jnp.int32),
             "old_logp_BxN": old, "advantages_BxN": f32(), "returns_BxN": f32(),
             "old_values_BxN": api.values(params["value"], cfg, seq, ones, start=L - N)}
    return state, lcfg, batch


def add_minibatch_args(p: argparse.ArgumentParser) -> None:
    """The shape and minibatch options `one_minibatch` reads (shared with profile_update.py)."""
    p.add_argument("--shape", default="matmul-bound", choices=sorted(bench_ppo.SHAPES))
    p.add_argument("--batch", type=int, default=32, help="rows of the minibatch")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--response-len", type=int, default=32)
    p.add_argument("--dtype", default="float32")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_minibatch_args(p)
    p.add_argument("--layers", action="store_true",
                   help="time one block's pieces (MLP, attention, block) and a dense layer applied to B×T×E "
                        "vs the same rows as (B·T)×E, forward and forward + backward")
    args = p.parse_args(argv)
    if args.layers:
        return layers(args)
    state, lcfg, batch = one_minibatch(args)
    cfg, N, L = lcfg.policy_model, args.response_len, args.prompt_len + args.response_len
    seq, ones, params = batch["sequence_BxL"], batch["sequence_mask_BxL"], state.train.params
    kw = dict(model_cfg=cfg, num_response=N, temperature=lcfg.temperature)

    def policy_loss(policy):
        logp = api.policy_forward(policy, None, seq, ones, **kw)["logp_BxN"]
        return ppo_objective.ppo_policy_loss(logp, batch["old_logp_BxN"], batch["advantages_BxN"],
                                             batch["response_mask_BxN"])[0]

    def value_loss(value):
        v = api.values(value, cfg, seq, ones, start=L - N)
        return ppo_objective.value_loss(v, batch["old_values_BxN"], batch["returns_BxN"], batch["response_mask_BxN"])[0]

    grads = jax.grad(lambda p: policy_loss(p["policy"]) + value_loss(p["value"]))(params)
    tx = state.train.tx
    parts = {
        "policy forward": (jax.jit(policy_loss), params["policy"]),
        "policy forward + backward": (jax.jit(jax.value_and_grad(policy_loss)), params["policy"]),
        "value forward + backward": (jax.jit(jax.value_and_grad(value_loss)), params["value"]),
        "optimizer (AdamW, clip)": (jax.jit(lambda g, s, p: tx.update(g, s, p)), grads, state.train.opt_state, params),
        "whole step (apply_update)": (jax.jit(lambda s, b: apply_update(s, b, None, ppo_objective.loss_fn, lcfg)),
                                      state.train, batch),
    }
    mm = bench_ppo.matmul_times(args.dtype, 5)
    peak = 2 * bench_ppo.MATMUL_N ** 3 / statistics.median(mm)
    print(f"{args.shape}: minibatch {args.batch} x ({args.prompt_len} + {N}), {args.dtype}; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s")
    print("| part | ms | GFLOP | GFLOP/s | % of matmul peak |\n|---|---|---|---|---|")
    for name, (fn, *fargs) in parts.items():
        flops = bench_ppo.compiled_stats(fn, *fargs)["flops"]
        t = _time(fn, *fargs)
        print(f"| {name} | {1e3 * t:.1f} | {flops / 1e9:.2f} | {flops / t / 1e9:.1f} | {100 * flops / t / peak:.0f}% |",
              flush=True)
    return 0


def layers(args) -> int:
    """Forward and forward + backward of a block's pieces at the shape's width, on B × (prompt + response)
    tokens, and of a plain dense layer (then tanh) whose input is B×T×E or the same rows flattened: the
    weight gradient of the 3-D form contracts two axes, which XLA:CPU lays out with a transposed copy."""
    from rlhfjax.models import transformer

    cfg = bench_ppo.shape_config(args.shape, args.dtype)
    B, T, E = args.batch, args.prompt_len + args.response_len, cfg.hidden_size
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (B, T, E), jnp.dtype(args.dtype))
    positions, mask = jnp.broadcast_to(jnp.arange(T), (B, T)), jnp.ones((B, T), jnp.int32)
    w = jax.random.normal(key, (E, cfg.mlp_size), jnp.dtype(args.dtype)) / np.sqrt(E)

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    def module_fns(module, *inputs):
        params = module.init(key, *inputs)
        loss = lambda p, x: jnp.sum(first(module.apply(p, x, *inputs[1:])))  # noqa: E731
        return params, loss

    pieces = {
        "MLP": module_fns(transformer.MLP(cfg), x),
        "attention": module_fns(transformer.Attention(cfg), x, positions, mask, None, 0),
        "block": module_fns(transformer.Block(cfg), x, positions, mask, None, 0),
        "dense + tanh on B×T×E": (w, lambda w, x: jnp.sum(jnp.tanh(x @ w))),
        "dense + tanh on (B·T)×E rows": (w, lambda w, x: jnp.sum(jnp.tanh(x.reshape(-1, E) @ w))),
    }
    mm = bench_ppo.matmul_times(args.dtype, 5)
    peak = 2 * bench_ppo.MATMUL_N ** 3 / statistics.median(mm)
    print(f"{args.shape}: {B} x {T} tokens, width {E}, MLP {cfg.mlp_size}, {args.dtype}; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s")
    print("| piece | forward ms | forward + backward ms | GFLOP (fwd + bwd) | % of matmul peak (fwd + bwd) |")
    print("|---|---|---|---|---|")
    for name, (params, loss) in pieces.items():
        fwd, both = jax.jit(loss), jax.jit(jax.grad(loss, argnums=(0, 1)))
        flops = bench_ppo.compiled_stats(both, params, x)["flops"]
        t_fwd, t_both = _time(fwd, params, x), _time(both, params, x)
        print(f"| {name} | {1e3 * t_fwd:.2f} | {1e3 * t_both:.2f} | {flops / 1e9:.2f} | "
              f"{100 * flops / t_both / peak:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
