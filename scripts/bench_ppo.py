"""One PPO-RLHF iteration broken into its phases (fixed batch and lengths, random-init models).

    python scripts/bench_ppo.py --shape toy                                   # the toy-lab config
    python scripts/bench_ppo.py --shape matmul-bound                          # 4 x 256 GPT-2, B 32, 32 + 32
    python scripts/bench_ppo.py --shape gpt2-124m --batch 8 --prompt-len 32 --response-len 16 \\
        --epochs 1 --minibatches 2 --iters 2                                  # CPU (docs/benchmarks.md)
    python scripts/bench_ppo.py --shape gpt2-124m --batch 64 --prompt-len 64 --response-len 24 --dtype bfloat16  # GPU

Phases are those of `rlhfjax.recipes.ppo.collect` (generate, RM score, policy log-probs, values,
reference log-probs, rewards + GAE) plus the jitted update (`train.update.minibatch_update`: epochs ×
minibatches in one call), each timed with `block_until_ready`. Policy, reference, reward and value models all have the
chosen shape (the value model is separate, as in the toy-lab default). No EOS, so every response
is `--response-len` tokens. The first iteration compiles and is reported separately; the table is
the median over `--iters` timed iterations.

Utilisation: each phase is lowered again with the benchmark's arguments and XLA's cost analysis of the
compiled program gives its FLOPs, bytes accessed and (`memory_analysis`) peak buffer memory; achieved
FLOP/s = FLOPs / median time, as a % of a square matmul timed between the iterations ("matmul peak").
XLA counts a loop body once whatever its trip count (tests/test_bench_utilisation.py), so the FLOPs and
bytes are scaled by the loops' trip counts: generate = sample + (N - 1) x one decode step analysed on
its own; chunked teacher-forced phases x chunks; update x epochs·minibatches (the `lax.scan` of steps).
The floor = the iteration's FLOPs, with the update's taken without remat, at the matmul peak.
A last line pairs each iteration's update with the matmul timings just before and after it, so that a
shared machine's drift over the run does not move the update's ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import ml_collections

from rlhfjax import parallel
from rlhfjax.models import api, init_cache, init_params, init_scalar_params, preset
from rlhfjax.objectives import kl_control
from rlhfjax.objectives import ppo as ppo_objective
from rlhfjax.objectives.core import FIRST_RATIOS
from rlhfjax.harness import experience
from rlhfjax.harness.roles import Role, Roles
from rlhfjax.online import runner
from rlhfjax.recipes import ppo as ppo_recipe
from rlhfjax.sampling import SamplingConfig, _pick
from rlhfjax.train import default_optim_config
from rlhfjax.train.update import minibatch_update

SHAPES = {
    # = experiments/toylab_sft.py's model (rlhfjax.config_blocks.toy_model_config) on the toy vocabulary
    "toy": dict(family="llama", vocab_size=240, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                intermediate_size=192, max_position_embeddings=64),
    "gpt2-124m": dict(family="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                      max_position_embeddings=1024),
    # big enough that the phases are matmuls rather than per-op overhead, small enough for a 2-core CPU
    "matmul-bound": dict(family="gpt2", vocab_size=4096, hidden_size=256, num_layers=4, num_heads=4,
                         max_position_embeddings=1024),
}
DEFAULTS = dict(batch=64, prompt_len=16, response_len=24, epochs=4, minibatches=4)  # toy-lab sizes
SHAPE_DEFAULTS = {"matmul-bound": dict(batch=32, prompt_len=32, response_len=32, epochs=4, minibatches=1)}
PHASES = ("generate", "policy_logp", "reference", "score", "values", "advantages", "update")


def compiled_stats(jitted_fn, *args, **kwargs) -> dict:
    """XLA's cost and memory analysis of `jitted_fn(*args, **kwargs)` as compiled: {flops, bytes,
    peak_memory_bytes, temp_bytes}. Loop bodies are counted once (see the module doc); peak memory is None where
    the backend has no memory analysis."""
    compiled = jitted_fn.lower(*args, **kwargs).compile()
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})  # a list in older JAX
    try:
        mem = compiled.memory_analysis()
    except NotImplementedError:
        mem = None
    peak = temp = None
    if mem is not None:  # arguments + outputs + XLA's temp allocation, less donated-and-reused buffers: an upper
        # bound. Not `peak_memory_in_bytes`: on XLA:CPU it can be below the temp allocation alone.
        temp = mem.temp_size_in_bytes
        peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + temp - mem.alias_size_in_bytes
    nan = float("nan")  # no cost analysis on this backend
    return {"flops": cost.get("flops", nan), "bytes": cost.get("bytes accessed", nan), "peak_memory_bytes": peak,
            "temp_bytes": temp}


def scaled(stats, trips):
    """`stats` with flops and bytes × `trips`; memory unchanged (a loop reuses its buffers)."""
    return {**stats, "flops": trips * stats["flops"], "bytes": trips * stats["bytes"], "xla_flops": stats["flops"]}


MATMUL_N = 2048


@functools.lru_cache(maxsize=None)
def _square_operand(dtype):
    return jax.random.normal(jax.random.PRNGKey(0), (MATMUL_N, MATMUL_N), dtype)


_square = jax.jit(lambda x: x @ x)


def matmul_times(dtype, repeats) -> list[float]:
    """Seconds of `repeats` jitted MATMUL_N² @ MATMUL_N² matmuls (compiled and warmed up first)."""
    a = _square_operand(jnp.dtype(dtype))
    jax.block_until_ready(_square(a))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(_square(a))
        times.append(time.perf_counter() - t)
    return times


def matmul_peak(dtype, repeats=7, stat=statistics.median) -> float:
    """FLOP/s of a square matmul (`stat` of `repeats` timings): the practical peak of this device."""
    return 2 * MATMUL_N ** 3 / stat(matmul_times(dtype, repeats))


def decode_step_stats(params, model_cfg, sampling, prompt_BxP):
    """`compiled_stats` of one step of the sampler's decode loop (pick a token from the logits, feed it
    against the full (P + N)-slot KV cache): the while-loop body XLA's analysis of `sample` counts once."""
    B, P = prompt_BxP.shape
    L = P + sampling.max_new_tokens

    @jax.jit
    def step(params, logits_BxV, mask_BxL, cache, j, rng):
        tok, _, _ = _pick(logits_BxV, jax.random.fold_in(rng, j), sampling)
        return api.decode(params, model_cfg, tok[:, None], jnp.full((B, 1), P, jnp.int32) + j, mask_BxL, cache, P + j)

    logits = jnp.zeros((B, model_cfg.vocab_size), jnp.float32)
    mask = jnp.ones((B, L), jnp.int32)
    return compiled_stats(step, params, logits, mask, init_cache(model_cfg, B, L), jnp.int32(0), jax.random.PRNGKey(0))


def generate_stats(params, prompt_BxP, mask_BxP, rng, *, model_cfg, sampling):
    """Loop-corrected stats of `sampling.sample`: XLA's (prefill + one decode step) + (N - 1) decode steps."""
    whole = compiled_stats(experience.sample_phase, params, prompt_BxP, mask_BxP, rng, model_cfg=model_cfg,
                           cfg=sampling)
    step = decode_step_stats(params, model_cfg, sampling, prompt_BxP)
    more = sampling.max_new_tokens - 1
    return {**whole, "flops": whole["flops"] + more * step["flops"], "bytes": whole["bytes"] + more * step["bytes"],
            "xla_flops": whole["flops"]}


def phase_stats(setup, state, exp, prompts, adv, lcfg, args):
    """Loop-corrected `compiled_stats` of every phase, lowered with the arguments `collect` and the update
    passed them; `update_no_remat` = the update's with `PPOLossConfig.remat=False` (for the floor)."""
    roles, params = setup.roles, state.train.params
    ro, batch, N, T = exp["rollout"], exp["batch"], args.response_len, setup.sampling.temperature
    chunk = ppo_recipe.minibatch_size(setup.config)
    chunks = args.batch // chunk  # `in_chunks` runs the teacher-forced phases as a lax.map over these
    seq, smask = ro.sequence_BxL, ro.sequence_mask_BxL
    kw = dict(model_cfg=roles.policy.cfg, num_response=N, temperature=T, chunk_size=chunk)
    xla = {
        "policy_logp": compiled_stats(experience.logp_phase, params["policy"], seq, smask, **kw),
        "reference": compiled_stats(experience.logp_phase, roles.reference.params, seq, smask, **kw),
        "score": compiled_stats(experience.score_phase, roles.reward.params, seq, smask, model_cfg=roles.reward.cfg,
                                chunk_size=chunk),
        "values": compiled_stats(experience.value_phase, params["value"], seq, smask, model_cfg=roles.value.cfg,
                                 num_response=N, chunk_size=chunk),
    }
    out = {k: scaled(v, chunks) for k, v in xla.items()}
    out["generate"] = generate_stats(params["policy"], prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
                                     jax.random.PRNGKey(0), model_cfg=roles.policy.cfg, sampling=setup.sampling)
    # GAE's reverse lax.scan is counted once too; left as XLA reports it (elementwise, ~B·N·10 FLOPs)
    out["advantages"] = scaled(compiled_stats(
        ppo_objective.experience_batch, exp["raw_score_B"], batch["old_logp_BxN"], exp["ref_logp_BxN"],
        batch["old_values_BxN"], ro, state.method, state.reward_gain, state.reward_bias, cfg=adv), 1)
    steps = args.epochs * args.minibatches
    for name, remat in (("update", lcfg.remat), ("update_no_remat", False)):
        upd = compiled_stats(minibatch_update, state.train, batch, None, jax.random.PRNGKey(0),
                             loss_fn=ppo_objective.loss_fn, config=dataclasses.replace(lcfg, remat=remat),
                             epochs=args.epochs, num_minibatches=args.minibatches)
        out[name] = scaled(upd, steps)
    return out


def shape_config(shape: str, dtype: str, scan_layers: bool = False):
    """The `ModelConfig` of a named `SHAPES` entry (every role of `build` uses it)."""
    sizes = dict(SHAPES[shape])
    return preset(sizes.pop("family"), dtype=dtype, scan_layers=scan_layers, **sizes)


def build(args):
    """(setup, state, advantage config, loss config, prompt batch): random models of the chosen shape
    as the recipe's roles on one device."""
    cfg = shape_config(args.shape, args.dtype, args.scan_layers).replace(logits_chunk=args.logits_chunk)
    policy = init_params(cfg, jax.random.PRNGKey(0))
    reward = init_scalar_params(cfg, jax.random.PRNGKey(1))
    reward["head"]["kernel"] = 0.02 * jax.random.normal(jax.random.PRNGKey(2), reward["head"]["kernel"].shape)
    mesh = parallel.single_device_mesh()

    def role(name, kind, params):
        shardings = api.param_shardings(cfg, mesh, kind)
        return Role(name, kind, cfg, api.place(params, shardings), shardings, "random init")

    roles = Roles(policy=role("policy", "lm", policy), reference=role("reference", "lm", policy),
                  reward=role("reward", "scalar", reward), value=role("value", "scalar", reward))
    optim = default_optim_config()
    optim.learning_rate = 1e-5
    config = ml_collections.ConfigDict({"seed": 0, "optim": optim, "train": {"batch_size": args.batch},
                                        "ppo": {"num_minibatches": args.minibatches}})
    sampling = SamplingConfig(max_new_tokens=args.response_len, temperature=0.7, eos_id=None)
    setup = runner.OnlineSetup(config, mesh, roles, None, None, sampling, None)
    lcfg = ppo_objective.PPOLossConfig(policy_model=cfg, value_model=cfg, num_response=args.response_len,
                                       temperature=0.7, remat=args.remat or args.first_ratio == "remat",
                                       remat_policy=args.remat_policy, first_ratio=args.first_ratio)
    state = runner.create_state(setup, {"policy": roles.policy.params, "value": roles.value.params},
                                {"policy": roles.policy.shardings, "value": roles.value.shardings},
                                total_steps=1000, method_state=kl_control.AdaptiveKL.create())
    rng = np.random.default_rng(0)
    prompt = jnp.asarray(rng.integers(4, cfg.vocab_size, (args.batch, args.prompt_len)), jnp.int32)
    prompts = {"prompt_tokens_BxP": prompt, "prompt_mask_BxP": jnp.ones_like(prompt)}
    return setup, state, ppo_objective.AdvantageConfig(), lcfg, prompts


def iteration(setup, state, adv, lcfg, prompts, args, it, timed=True):
    exp = ppo_recipe.collect(state, setup, prompts, jax.random.PRNGKey(100 + it), adv_cfg=adv, timed=timed,
                             fused=not timed)
    t = time.perf_counter()
    train, metrics = minibatch_update(state.train, exp["batch"], None, jax.random.PRNGKey(200 + it),
                                      loss_fn=ppo_objective.loss_fn, config=lcfg, epochs=args.epochs,
                                      num_minibatches=args.minibatches)
    jax.block_until_ready((train, metrics))
    times = {k[len("time/"):]: v for k, v in exp["metrics"].items() if k.startswith("time/")}
    times["update"] = time.perf_counter() - t
    times["first_ratio_exact"] = float(metrics["ppo/ratio_min"][0]) == float(metrics["ppo/ratio_max"][0]) == 1.0
    return state.replace(train=train, method=exp["kl_state"]), times, exp


def fmt_mb(b):
    return "n/a" if b is None else f"{b / 2**20:,.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="toy")
    per_shape = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in SHAPE_DEFAULTS.items())
    # None = the shape's default (SHAPE_DEFAULTS, else DEFAULTS = the toy-lab sizes)
    ap.add_argument("--batch", type=int, help=f"rollouts per iteration (default 64; per shape: {per_shape})")
    ap.add_argument("--prompt-len", type=int, help="default 16")
    ap.add_argument("--response-len", type=int, help="default 24")
    ap.add_argument("--epochs", type=int, help="default 4")
    ap.add_argument("--minibatches", type=int, help="default 4")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations after the compiling one")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--remat", action="store_true", help="PPOLossConfig.remat=True (implied by --first-ratio remat)")
    ap.add_argument("--remat-policy", default="nothing_saveable", help="what remat keeps (jax.checkpoint_policies)")
    ap.add_argument("--first-ratio", default="own_logp", choices=FIRST_RATIOS,
                    help="how the first minibatch's ratio is exactly 1 (PPOLossConfig.first_ratio)")
    ap.add_argument("--scan-layers", action="store_true", help="one scanned block (ModelConfig.scan_layers)")
    ap.add_argument("--logits-chunk", type=int, default=0, help="ModelConfig.logits_chunk of every role (0: off)")
    ap.add_argument("--fused", action="store_true",
                    help="also time the experience phases fused into one jit (ppo.experience_jit=fused)")
    ap.add_argument("--skip-analysis", action="store_true", help="no cost/memory analysis (compile times only)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    for k, v in {**DEFAULTS, **SHAPE_DEFAULTS.get(args.shape, {})}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    setup, state, adv, lcfg, prompts = build(args)
    reference = setup.roles.reference.params
    t0 = time.perf_counter()
    state, first, exp = iteration(setup, state, adv, lcfg, prompts, args, 0)
    compile_s = time.perf_counter() - t0
    runs = []
    # The matmul is timed between the iterations, so that it shares their load: on a shared machine a peak
    # timed once at the start can be 2x off (phases above "100%" of it).
    mm = matmul_times(args.dtype, 3)
    beside = []  # per iteration: the matmul timings just before and just after it (a machine's speed drifts)
    for it in range(1, args.iters + 1):
        state, times, exp = iteration(setup, state, adv, lcfg, prompts, args, it)
        runs.append(times)
        after = matmul_times(args.dtype, 2)
        beside.append(mm[-2:] + after)
        mm += after
    peak, best_peak = 2 * MATMUL_N ** 3 / statistics.median(mm), 2 * MATMUL_N ** 3 / min(mm)
    med = {p: statistics.median(r[p] for r in runs) for p in PHASES}
    total = sum(med.values())
    tokens = args.batch * args.response_len
    exact = all(r["first_ratio_exact"] for r in [first, *runs])
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  shape: {args.shape} "
          f"({sum(x.size for x in jax.tree.leaves(reference)) / 1e6:.1f}M params/model, {args.dtype}"
          f"{', scanned layers' if args.scan_layers else ''})  batch {args.batch}, prompt {args.prompt_len}, "
          f"response {args.response_len}, {args.epochs} epochs x {args.minibatches} minibatches, "
          f"first ratio by {lcfg.first_ratio}, remat {lcfg.remat}{f' ({lcfg.remat_policy})' if lcfg.remat else ''}")
    print(f"first iteration (compiles every phase): {compile_s:.2f} s; first minibatch ratio exactly 1 in every "
          f"iteration: {exact}")
    result = {"args": vars(args), "device": jax.devices()[0].device_kind, "compile_s": compile_s, "median_s": med,
              "iteration_s": total, "tokens_per_s": tokens / total, "first_ratio_exact": exact}
    if args.fused:  # the recipe's choice on an accelerator: scoring to advantages as one jit after generation
        t0 = time.perf_counter()
        state, _, _ = iteration(setup, state, adv, lcfg, prompts, args, 0, timed=False)
        fused_compile_s = time.perf_counter() - t0
        fused = []
        for it in range(1, args.iters + 1):
            state, times, _ = iteration(setup, state, adv, lcfg, prompts, args, it, timed=False)
            fused.append(times)
        fused_med = {k: statistics.median(r[k] for r in fused) for k in ("generate", "experience", "update")}
        fused_total = sum(fused_med.values())
        print(f"fused experience: compile {fused_compile_s:.1f} s; generate {1e3 * fused_med['generate']:.1f} ms, "
              f"experience {1e3 * fused_med['experience']:.1f} ms (timed phases: "
              f"{1e3 * (total - med['generate'] - med['update']):.1f} ms), update {1e3 * fused_med['update']:.1f} "
              f"ms; iteration {1e3 * fused_total:.1f} ms (timed phases: {1e3 * total:.1f} ms)")
        result.update(fused_median_s=fused_med, fused_iteration_s=fused_total, fused_compile_s=fused_compile_s)
    if args.skip_analysis:
        print("| phase | ms | share |\n|---|---|---|\n" + "\n".join(
            f"| {p} | {1e3 * med[p]:.1f} | {100 * med[p] / total:.0f}% |" for p in PHASES)
            + f"\n| **iteration** | **{1e3 * total:.1f}** | 100% |")
    else:
        t0 = time.perf_counter()
        stats = phase_stats(setup, state, exp, prompts, adv, lcfg, args)
        print(f"cost analysis (compiles again): {time.perf_counter() - t0:.1f} s")
        result.update(_utilisation_report(stats, med, total, tokens, peak, best_peak, mm, args, lcfg))
        result.update(_paired_update_ratio(stats["update"]["flops"], [r["update"] for r in runs], beside))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def _utilisation_report(stats, med, total, tokens, peak, best_peak, mm, args, lcfg) -> dict:
    for p in PHASES:
        stats[p]["flops_per_s"] = stats[p]["flops"] / med[p]
        stats[p]["pct_matmul_peak"] = 100 * stats[p]["flops_per_s"] / peak
    print(f"matmul peak ({args.dtype} {MATMUL_N}^3, median of {len(mm)} timed between the iterations): "
          f"{peak / 1e9:,.1f} GFLOP/s (best {best_peak / 1e9:,.1f})")
    print("| phase | ms | share | GFLOP | GFLOP/s | % of matmul peak | GB accessed | peak memory MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for p in PHASES:
        st = stats[p]
        print(f"| {p} | {1e3 * med[p]:.1f} | {100 * med[p] / total:.0f}% | {st['flops'] / 1e9:,.3f} | "
              f"{st['flops_per_s'] / 1e9:,.2f} | {st['pct_matmul_peak']:.1f}% | {st['bytes'] / 1e9:,.3f} | "
              f"{fmt_mb(st['peak_memory_bytes'])} |")
    flops = sum(stats[p]["flops"] for p in PHASES)
    print(f"| **iteration** | **{1e3 * total:.1f}** | 100% | {flops / 1e9:,.3f} | {flops / total / 1e9:,.2f} | "
          f"{100 * flops / total / peak:.1f}% | | |")
    print(f"response tokens/s (whole iteration): {tokens / total:,.0f}; "
          f"generate only: {tokens / med['generate']:,.0f}")
    floor_flops = flops - stats["update"]["flops"] + stats["update_no_remat"]["flops"]
    floor_s = floor_flops / peak
    print(f"update without remat: {stats['update_no_remat']['flops'] / 1e9:,.3f} GFLOP "
          f"(as timed, remat {'on' if lcfg.remat else 'off'}: {stats['update']['flops'] / 1e9:,.3f})")
    print(f"floor (iteration FLOPs without remat, {floor_flops / 1e9:,.3f} GFLOP, at the matmul peak): "
          f"{1e3 * floor_s:.1f} ms; measured {1e3 * total:.1f} ms = {100 * total / floor_s:,.0f}% of the floor "
          f"({100 * floor_s / total:.1f}% utilisation)")
    return {"matmul_peak_flops_per_s": peak, "matmul_best_flops_per_s": best_peak, "phase_stats": stats,
            "iteration_flops": flops, "floor_flops": floor_flops, "floor_s": floor_s,
            "pct_of_floor": 100 * total / floor_s}


def _paired_update_ratio(flops, update_s, beside) -> dict:
    """The update's % of the matmul timed beside it, per iteration (the update's FLOP/s over the median of the
    matmul timings just before and after that iteration): slow drift of a shared machine cancels out, which the
    table's ratio of two medians over the whole run does not."""
    pct = [100 * (flops / t) / (2 * MATMUL_N ** 3 / statistics.median(mm)) for t, mm in zip(update_s, beside)]
    print(f"update % of the matmul timed beside it, per iteration: median {statistics.median(pct):.1f}% "
          f"(range {min(pct):.1f}-{max(pct):.1f}%, {len(pct)} iterations)")
    return {"update_pct_paired": pct, "matmul_beside_s": beside}


if __name__ == "__main__":
    main()
