"""Training-state bytes per device for real model shapes under DP, FSDP and TP, from this framework's own
sharding rules: which model fits where (computed, no device needed).

    python scripts/memory_table.py [--out docs/memory.md] [--headroom 0.75]

For each model shape the params are built abstractly (`jax.eval_shape`), every leaf is split as
`parallel.LOGICAL_RULES` split it on a mesh of the given sizes (an abstract mesh: no devices), and the
optimizer state's bytes per param are measured from `train.make_optimizer`'s own state. A run holds:
- SFT / RM / DPO: one trainable model: fp32 params + fp32 grads + optimizer state (AdamW: mu, nu);
- PPO: policy and value model trainable, reference and reward model frozen (fp32 params only).
"Fits" means that state is at most `headroom` of the device's memory; the rest is left for activations
(`model.remat_policy` and micro-batches set their size), XLA's workspace and the sampler's KV cache.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from rlhfjax import parallel  # noqa: E402
from rlhfjax.models import Transformer, preset  # noqa: E402
from rlhfjax.train import default_optim_config, make_optimizer  # noqa: E402

GiB = 1024 ** 3

# Public shapes (HF configs) of the models the configs in experiments/ name, and larger ones for scale.
MODELS = {
    "Pythia-1.4B": preset("gpt_neox", vocab_size=50304, hidden_size=2048, num_layers=24, num_heads=16,
                          intermediate_size=8192),
    "Qwen2.5-1.5B": preset("qwen2", vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12,
                           num_kv_heads=2, intermediate_size=8960, tie_embeddings=True),
    "Llama-3.2-3B": preset("llama", vocab_size=128256, hidden_size=3072, num_layers=28, num_heads=24,
                           num_kv_heads=8, intermediate_size=8192, tie_embeddings=True),
    "Llama-3.1-8B": preset("llama", vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32,
                           num_kv_heads=8, intermediate_size=14336),
    "Llama-2-13B": preset("llama", vocab_size=32000, hidden_size=5120, num_layers=40, num_heads=40,
                          intermediate_size=13824),
    "Llama-3.1-70B": preset("llama", vocab_size=128256, hidden_size=8192, num_layers=80, num_heads=64,
                            num_kv_heads=8, intermediate_size=28672),
}

# (name, devices, GiB per device): one 8-GPU node and the two TPU slices of the experiments' configs.
HARDWARE = [("8x H100 80GB (one node)", 8, 80 * 1e9 / GiB), ("TPU v4-32 (16 chips)", 16, 32.0),
            ("TPU v5e-64 (64 chips)", 64, 16.0)]
STRATEGIES = ("dp", "fsdp", "tp")
TP_SIZE = 8  # tensor parallelism inside a node (GPU) or over 8 chips of a slice; the rest data parallel


def mesh_sizes(strategy: str, devices: int) -> dict[str, int]:
    if strategy == "dp":
        return {"data": devices, "fsdp": 1, "tensor": 1}
    if strategy == "fsdp":
        return {"data": 1, "fsdp": devices, "tensor": 1}
    return {"data": devices // TP_SIZE, "fsdp": 1, "tensor": TP_SIZE}


@functools.lru_cache(maxsize=None)
def _layout(name: str, scalar_head: bool) -> tuple[tuple[tuple, tuple[int, ...]], ...]:
    """(logical axis names, shape) of every param of model `name` (abstract: nothing is allocated)."""
    cfg = MODELS[name]
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: Transformer(cfg, lm_head=not scalar_head).init(
        jax.random.PRNGKey(0), tokens, tokens, tokens)["params"])
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    out = tuple((tuple(s), tuple(x.shape)) for s, x in zip(specs, jax.tree.leaves(nn.meta.unbox(boxed))))
    if scalar_head:  # the scalar head (hidden -> 1), replicated
        out += (((None, None), (cfg.hidden_size, 1)),)
    return out


def per_device_params(name: str, sizes: dict[str, int], scalar_head: bool = False) -> tuple[int, int]:
    """(params a device holds, params in all) for model `name` under the rule table on a mesh of `sizes`."""
    mesh = AbstractMesh(tuple(sizes[a] for a in parallel.MESH_AXES), parallel.MESH_AXES)
    local = total = 0
    for logical, shape in _layout(name, scalar_head):
        split = parallel.logical_to_spec(logical, shape, mesh)
        ways = math.prod(math.prod(sizes[a] for a in ((p,) if isinstance(p, str) else p))
                         for p in split if p is not None)
        total += math.prod(shape)
        local += math.prod(shape) // ways
    return local, total


def optimizer_bytes_per_param() -> float:
    """Bytes of `make_optimizer`'s state per fp32 param, measured on a small model's abstract state."""
    cfg = preset("llama", vocab_size=256, hidden_size=64, num_layers=2, num_heads=4)
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = jax.eval_shape(lambda: nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), tokens, tokens,
                                                                          tokens)["params"]))
    state = jax.eval_shape(make_optimizer(default_optim_config()).init, params)
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state)) / n


def table(headroom: float) -> tuple[list, dict]:
    opt = optimizer_bytes_per_param()
    trainable = 4 + 4 + opt  # fp32 params + fp32 grads + optimizer state
    rows, best, largest = [], {}, {}
    for hw, devices, gib in HARDWARE:
        for strategy in STRATEGIES:
            sizes = mesh_sizes(strategy, devices)
            for name in MODELS:
                lm, total = per_device_params(name, sizes)
                head, _ = per_device_params(name, sizes, scalar_head=True)
                for run, need in (("SFT/RM/DPO", lm * trainable / GiB),
                                  ("PPO", (lm * trainable + head * trainable + lm * 4 + head * 4) / GiB)):
                    fits = need <= headroom * gib
                    rows.append((hw, strategy, name, total / 1e9, run, need, fits))
                    if fits:
                        best[(hw, strategy, run)] = name  # MODELS is ordered by size
                    # Bytes grow ~linearly with size at a fixed shape family: scale the largest model's
                    # bytes per param to the memory budget.
                    largest[(hw, strategy, run)] = headroom * gib / (need / (total / 1e9))
    return rows, {"optimizer_bytes_per_param": opt, "best": best, "largest": largest}


def render(rows, info, headroom: float, seconds: float) -> str:
    out = ["# Training-state memory per device (computed)", "",
           "Computed by `python scripts/memory_table.py` from the framework's sharding rules and the optimizer's",
           f"own state ({info['optimizer_bytes_per_param']:.1f} bytes per param: AdamW's mu and nu in fp32) in "
           f"{seconds:.0f} s on a CPU; no device was used. Bytes are params + grads + optimizer state (trainable, "
           "16 bytes per param) and fp32 params of frozen models; activations, XLA workspace and the KV cache "
           f"come on top. **Fits** = state ≤ {headroom:.0%} of the device's memory. TP splits 8 ways (tensor=8, "
           "the rest data parallel); scanned layers (`model.scan_layers`) do not change these numbers.", "",
           "## Largest model that fits (computed)", "",
           "The largest listed model whose state fits, and in brackets the size in billions of params at which a "
           "Llama-3.1-70B-shaped model's state would fill the budget (bytes scale linearly with size).", "",
           "| hardware | run | DP | FSDP | TP (8) |", "|---|---|---|---|---|"]
    for hw, _, _ in HARDWARE:
        for run in ("SFT/RM/DPO", "PPO"):
            cells = [f"{info['best'].get((hw, s, run), 'none listed')} (≈{info['largest'][(hw, s, run)]:.1f}B)"
                     for s in STRATEGIES]
            out.append(f"| {hw} | {run} | " + " | ".join(cells) + " |")
    out += ["", "## GiB per device (computed)", "",
            "| hardware | strategy | model | params (B) | run | GiB / device | fits |", "|---|---|---|---|---|---|---|"]
    for hw, strategy, name, billions, run, need, fits in rows:
        out.append(f"| {hw} | {strategy} | {name} | {billions:.2f} | {run} | {need:.1f} | {'yes' if fits else 'no'} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the markdown here (default: print it)")
    p.add_argument("--headroom", type=float, default=0.75, help="fraction of device memory the state may use")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows, info = table(args.headroom)
    text = render(rows, info, args.headroom, time.perf_counter() - t0)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
