"""Where one PPO optimizer step spends its time, op by op: a `jax.profiler` trace of a few jitted steps
(`bench_update_parts.one_minibatch`'s minibatch at a `bench_ppo` shape), read back from the trace's JSON.

    python scripts/profile_update.py --shape matmul-bound [--steps 3] [--trace-dir DIR]

Prints the compiled ops' time summed per kind (XLA's op name without its number: `ynn_fusion` is a matmul
handed to YNNPACK, `dot` one left to Eigen, the rest are elementwise/copy fusions), and how much of the
steps' span had 0, 1 or 2 ops running on the CPU client's worker threads. Op time counts every thread, so
it can exceed the wall time; a matmul running alone may still use every core inside YNNPACK.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_update_parts  # noqa: E402

from rlhfjax.objectives import ppo as ppo_objective  # noqa: E402
from rlhfjax.train.update import apply_update  # noqa: E402

WORKER = "XLAEigen"  # the XLA:CPU client's worker threads, where compiled ops run
NOT_OPS = ("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool", "end: ")


def op_events(trace_dir: str) -> list[dict]:
    """The complete ('X') events of compiled ops on the worker threads of the newest trace under `trace_dir`."""
    path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz")))[-1]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    return [e for e in events if e.get("ph") == "X" and WORKER in names.get((e["pid"], e["tid"]), "")
            and not e["name"].startswith(NOT_OPS)]


def op_kinds(ops: list[dict]) -> collections.Counter:
    """Microseconds per op kind: the op's name without XLA's numeric suffix."""
    out = collections.Counter()
    for e in ops:
        out[re.sub(r"\.\d+$", "", e["name"])] += e["dur"]
    return out


def concurrency(ops: list[dict]) -> dict[int, float]:
    """{number of ops running at once: share of the span from the first op's start to the last one's end}."""
    edges = sorted([(e["ts"], 1) for e in ops] + [(e["ts"] + e["dur"], -1) for e in ops])
    spans, running, last = collections.Counter(), 0, edges[0][0]
    for t, step in edges:
        spans[running] += t - last
        running, last = running + step, t
    total = sum(spans.values())
    return {k: v / total for k, v in sorted(spans.items())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_update_parts.add_minibatch_args(p)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps traced (after one untraced)")
    p.add_argument("--top", type=int, default=15, help="op kinds listed")
    p.add_argument("--trace-dir", help="keep the trace here (default: a temporary directory)")
    args = p.parse_args(argv)
    state, lcfg, batch = bench_update_parts.one_minibatch(args)
    step = jax.jit(lambda s, b: apply_update(s, b, None, ppo_objective.loss_fn, lcfg))
    jax.block_until_ready(step(state.train, batch))
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="rlhfjax-trace-")
    with jax.profiler.trace(trace_dir):
        start = time.perf_counter()
        for _ in range(args.steps):
            jax.block_until_ready(step(state.train, batch))
        wall_ms = 1e3 * (time.perf_counter() - start) / args.steps  # while tracing
    ops = op_events(trace_dir)
    kinds = op_kinds(ops)
    total = sum(kinds.values())
    per_step = lambda us: us / 1e3 / args.steps  # noqa: E731
    print(f"{args.shape}: one optimizer step on {args.batch} x ({args.prompt_len} + {args.response_len}) tokens, "
          f"{args.dtype}; {args.steps} steps traced in {trace_dir}")
    print(f"wall {wall_ms:.1f} ms per step (traced); op time on the worker threads {per_step(total):.1f} ms per step")
    print("| op kind | ms per step | share of op time |\n|---|---|---|")
    for kind, us in kinds.most_common(args.top):
        print(f"| {kind} | {per_step(us):.1f} | {100 * us / total:.1f}% |")
    shares = concurrency(ops)
    print("ops running at once, share of the traced span: "
          + ", ".join(f"{k}: {100 * v:.0f}%" for k, v in shares.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
