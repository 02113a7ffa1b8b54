"""Roofline-predicted time per PPO phase on an accelerator, computed from XLA's FLOP and byte counts of the
same programs `scripts/bench_ppo.py` times, compiled here (on any backend) without running them.

    python scripts/roofline_ppo.py                                    # GPT-2 124M, bf16, batch 64 and 256, H100
    python scripts/roofline_ppo.py --batch 64 --device h200 --json out.json

Per phase: time ≥ max(FLOPs / peak FLOP/s, bytes accessed / memory bandwidth), the roofline bound; the
phases are bench_ppo's (generate, the four teacher-forced forwards, advantages, update = epochs ×
minibatches optimizer steps), with its loop corrections (`bench_ppo.phase_stats`). Arguments are abstract
(`jax.eval_shape`), so nothing is allocated at full size and nothing runs. To keep compiles short on a
CPU, each program is compiled at 1 and 2 layers and extrapolated linearly to the model's depth: every
count is (embeddings + head) + layers × (one block), exact for a stack of identical blocks.

These are *computed* numbers, not measurements. The byte counts are XLA:CPU's (its fusion decisions, not
a GPU compiler's), and a real step adds kernel launches and host gaps: read them as a lower bound on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ppo  # noqa: E402

from rlhfjax.harness import experience  # noqa: E402
from rlhfjax.recipes import ppo as ppo_recipe  # noqa: E402

DEVICES = {  # dense bf16 tensor-core peak (FLOP/s) and HBM bandwidth (bytes/s), vendor datasheets (SXM)
    "h100": (989.4e12, 3.35e12),
    "h200": (989.4e12, 4.8e12),
}


def _abstract(x):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if hasattr(a, "shape") else a, x)


def counts(args, layers: int) -> dict:
    """bench_ppo's loop-corrected phase stats of the shape at `layers` layers, from abstract experience."""
    bench_ppo.SHAPES["_roofline"] = {**bench_ppo.SHAPES[args.shape], "num_layers": layers}
    a = dataclasses.replace(args, shape="_roofline")
    setup, state, adv, lcfg, prompts = bench_ppo.build(a)
    roles, params = setup.roles, state.train.params
    sample = functools.partial(experience.sample_phase, model_cfg=roles.policy.cfg, cfg=setup.sampling)
    ro = jax.eval_shape(sample, params["policy"], prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
                        jax.random.PRNGKey(0))
    cfgs = (roles.policy.cfg, roles.reward.cfg, roles.value.cfg, setup.sampling.temperature)
    scored = functools.partial(ppo_recipe._scored_experience, phases=ppo_recipe._UNTIMED, cfgs=cfgs,
                               chunk=ppo_recipe.minibatch_size(setup.config), adv_cfg=adv, value_on_policy=False)
    batch, _, _, _, raw, ref_logp = jax.eval_shape(scored, params, roles.reference.params, roles.reward.params, ro,
                                                   {}, state.method, state.reward_gain, state.reward_bias)
    exp = {"rollout": ro, "batch": batch, "raw_score_B": raw, "ref_logp_BxN": ref_logp}
    stats = bench_ppo.phase_stats(setup, _abstract(state), exp, _abstract(prompts), adv, lcfg, a)
    return {p: {"flops": s["flops"], "bytes": s["bytes"]} for p, s in stats.items()}


def render(out: dict) -> str:
    """Markdown tables: per phase the compute time (FLOPs / peak), the memory time (bytes / bandwidth) and the
    roofline bound, max of the two."""
    a, peak, bw = out["args"], out["peak_flops"], out["hbm_bytes_per_s"]
    text = []
    for B, stats in out["batches"].items():
        text.append(f"{a['shape']}, {a['dtype']}, batch {B}, prompt {a['prompt_len']} + response {a['response_len']}, "
                    f"{a['epochs']} epochs x {a['minibatches']} minibatches, {out['device'].upper()} "
                    f"({peak / 1e12:.0f} TFLOP/s, {bw / 1e12:.2f} TB/s), computed:\n")
        text.append("| phase | GFLOP | GB accessed (XLA:CPU) | FLOPs / peak (ms) | bytes / bandwidth (ms) | "
                    "roofline (ms) |\n|---|---|---|---|---|---|")
        sums = [0.0, 0.0, 0.0]
        for phase, s in stats.items():
            t = (s["flops"] / peak, s["bytes"] / bw)
            row = (*t, max(t))
            sums = [x + y for x, y in zip(sums, row)]
            text.append(f"| {phase} | {s['flops'] / 1e9:,.1f} | {s['bytes'] / 1e9:,.2f} | "
                        + " | ".join(f"{1e3 * x:,.2f}" for x in row) + " |")
        text.append("| **iteration** | | | " + " | ".join(f"**{1e3 * x:,.2f}**" for x in sums) + " |\n")
    return "\n".join(text)


def extrapolate(one: dict, two: dict, layers: int) -> dict:
    return {p: {k: one[p][k] + (layers - 1) * (two[p][k] - one[p][k]) for k in ("flops", "bytes")} for p in one}


@dataclasses.dataclass
class Args:
    shape: str
    batch: int
    prompt_len: int
    response_len: int
    epochs: int
    minibatches: int
    dtype: str
    remat: bool = False
    remat_policy: str = "nothing_saveable"
    first_ratio: str = "own_logp"
    scan_layers: bool = False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="gpt2-124m", choices=sorted(k for k in bench_ppo.SHAPES if not k.startswith("_")))
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--response-len", type=int, default=24)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="h100", choices=sorted(DEVICES))
    p.add_argument("--json", default="")
    p.add_argument("--render", default="", help="only print the tables of an earlier --json")
    ns = p.parse_args(argv)
    if ns.render:
        with open(ns.render) as f:
            print(render(json.load(f)))
        return 0
    peak, bw = DEVICES[ns.device]
    depth = bench_ppo.SHAPES[ns.shape]["num_layers"]
    out = {"args": vars(ns), "device": ns.device, "peak_flops": peak, "hbm_bytes_per_s": bw, "batches": {}}
    for B in ns.batch:
        args = Args(ns.shape, B, ns.prompt_len, ns.response_len, ns.epochs, ns.minibatches, ns.dtype)
        stats = extrapolate(counts(args, 1), counts(args, 2), depth)
        out["batches"][str(B)] = {p: s for p, s in stats.items() if p != "update_no_remat"}
    print(render(out))
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
