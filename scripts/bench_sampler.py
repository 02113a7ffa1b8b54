"""Sampler throughput: KV-cache sampler vs naive re-forward decode, and vs the HBM floor on GPU.

    python scripts/bench_sampler.py --shape tiny                  # CPU: cached vs naive
    python scripts/bench_sampler.py --shape gpt2-124m --batch 64 256 --prompt-len 128   # GPU

Naive decode = the same jitted loop without a cache: every step re-runs the full forward over the
fixed (P + N)-slot buffer (static shapes, as a cache-free JAX decoder must) and reads one logit row.
Floor (GPU) = bytes read per decode step (all params + the whole K/V cache, which the sampler
attends over in full each step) / HBM bandwidth; reported as tokens/s at that floor.

Utilisation: FLOPs from XLA's cost analysis of the compiled sampler (`bench_ppo.compiled_stats`), which
counts a loop body once: cached = analysis of `sample` (prefill + one decode step) + (N - 1) x one decode
step analysed on its own; naive = analysis of `naive_sample` x N (its fori_loop body is the whole
forward). Achieved FLOP/s = FLOPs / the best-of time above, as a % of a jitted 2048^3 matmul (best of 7,
timed at the start: "matmul peak"); peak memory from the compiled sampler's `memory_analysis`.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from rlhfjax.models import api, init_params, preset
from rlhfjax.sampling import SamplingConfig, _pick, sample

from bench_ppo import MATMUL_N, compiled_stats, fmt_mb, generate_stats, matmul_peak  # scripts/ is on sys.path

SHAPES = {
    "tiny": dict(family="llama", vocab_size=128, hidden_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, intermediate_size=128, max_position_embeddings=1024),
    "gpt2-124m": dict(family="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                      max_position_embeddings=1024),
}
HBM_GBPS = {"H100 PCIe": 2000, "H100": 3350, "H200": 4800, "A100": 2039}  # first match wins; SXM unless named


@functools.partial(jax.jit, static_argnames=("model_cfg", "cfg"))
def naive_sample(params, prompt_BxP, prompt_mask_BxP, rng, *, model_cfg, cfg: SamplingConfig):
    B, P = prompt_BxP.shape
    N = cfg.max_new_tokens
    seq = jnp.concatenate([prompt_BxP, jnp.full((B, N), cfg.pad_id, jnp.int32)], 1)
    mask = jnp.concatenate([prompt_mask_BxP, jnp.zeros((B, N), jnp.int32)], 1)

    def body(j, c):
        seq, mask = c
        logits = api.lm_logits(params, model_cfg, seq, mask)
        row = jax.lax.dynamic_index_in_dim(logits, P + j - 1, axis=1, keepdims=False)
        tok, _, _ = _pick(row, jax.random.fold_in(rng, j), cfg)
        seq = jax.lax.dynamic_update_slice(seq, tok[:, None], (0, P + j))
        mask = jax.lax.dynamic_update_slice(mask, jnp.ones((B, 1), jnp.int32), (0, P + j))
        return seq, mask

    return jax.lax.fori_loop(0, N, body, (seq, mask))[0][:, P:]


def timed(fn, repeats):
    jax.block_until_ready(fn())  # compile + warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def floor_tokens_per_s(cfg, params, batch, length, gbps):
    dtype_bytes = jnp.dtype(cfg.dtype).itemsize
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    kv_bytes = 2 * cfg.num_layers * batch * length * cfg.kv_heads * cfg.dim_per_head * dtype_bytes
    step_s = (param_bytes + kv_bytes) / (gbps * 1e9)
    return batch / step_s, param_bytes, kv_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="tiny")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) re-forward baseline")
    ap.add_argument("--hbm-gbps", type=float, default=None, help="override the bandwidth table")
    args = ap.parse_args()

    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    spec = dict(SHAPES[args.shape])
    cfg = preset(spec.pop("family"), dtype=dtype, param_dtype=dtype, **spec)
    params = init_params(cfg, jax.random.PRNGKey(0))
    sc = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, top_k=50)  # no EOS: full N
    gbps = args.hbm_gbps or next((v for k, v in HBM_GBPS.items() if k in dev.device_kind), None)
    peak = matmul_peak(dtype, stat=min)  # best-of, as the sampler timings are
    print(f"device: {dev.device_kind} ({dev.platform}), shape {args.shape}, dtype {dtype}, "
          f"prompt {args.prompt_len}, new tokens {args.new_tokens}")
    print(f"matmul peak ({dtype} {MATMUL_N}^3, best of 7): {peak / 1e9:,.1f} GFLOP/s")
    print("| batch | cached tok/s | naive tok/s | speed-up | floor tok/s | % of floor | cached GFLOP | cached GFLOP/s "
          "| cached % of matmul peak | cached peak MiB | naive GFLOP | naive GFLOP/s | naive % of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for B in args.batch:
        prompt = jax.random.randint(jax.random.PRNGKey(1), (B, args.prompt_len), 1, cfg.vocab_size)
        mask = jnp.ones_like(prompt)
        rng = jax.random.PRNGKey(2)
        n_tok = B * args.new_tokens
        t_c = timed(lambda: sample(params, prompt, mask, rng, model_cfg=cfg, cfg=sc).tokens_BxN,
                    args.repeats)
        cached = n_tok / t_c
        st = generate_stats(params, prompt, mask, rng, model_cfg=cfg, sampling=sc)
        util = f"{st['flops'] / 1e9:,.3f} | {st['flops'] / t_c / 1e9:,.2f} | {100 * st['flops'] / t_c / peak:.1f}% | "
        util += fmt_mb(st["peak_memory_bytes"])
        naive = speed = "-"
        naive_util = "- | - | -"
        if not args.no_naive:
            t_n = timed(lambda: naive_sample(params, prompt, mask, rng, model_cfg=cfg, cfg=sc),
                        args.repeats)
            naive, speed = f"{n_tok / t_n:,.0f}", f"{t_n / t_c:.1f}x"
            fl = compiled_stats(naive_sample, params, prompt, mask, rng, model_cfg=cfg, cfg=sc)["flops"]
            fl *= args.new_tokens  # the fori_loop body (one full forward) is counted once
            naive_util = f"{fl / 1e9:,.3f} | {fl / t_n / 1e9:,.2f} | {100 * fl / t_n / peak:.1f}%"
        floor = pct = "-"
        if gbps:
            f, _, _ = floor_tokens_per_s(cfg, params, B, args.prompt_len + args.new_tokens, gbps)
            floor, pct = f"{f:,.0f}", f"{100 * cached / f:.0f}%"
        print(f"| {B} | {cached:,.0f} | {naive} | {speed} | {floor} | {pct} | {util} | {naive_util} |", flush=True)


if __name__ == "__main__":
    main()
