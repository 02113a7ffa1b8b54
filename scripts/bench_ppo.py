"""One PPO-RLHF iteration broken into its phases (fixed batch and lengths, random-init models).

    python scripts/bench_ppo.py --shape toy                                   # the toy-lab config
    python scripts/bench_ppo.py --shape gpt2-124m --batch 8 --prompt-len 32 --response-len 16 \\
        --epochs 1 --minibatches 2 --iters 2                                  # CPU (docs/benchmarks.md)
    python scripts/bench_ppo.py --shape gpt2-124m --batch 64 --prompt-len 64 --response-len 24 --dtype bfloat16  # GPU

Phases are those of `rlhfjax.recipes.ppo.collect` (generate, RM score, policy log-probs, values,
reference log-probs, rewards + GAE) plus the jitted `ppo_update` (epochs × minibatches in one call),
each timed with `block_until_ready`. Policy, reference, reward and value models all have the
chosen shape (the value model is separate, as in the toy-lab default). No EOS, so every response
is `--response-len` tokens. The first iteration compiles and is reported separately; the table is
the median over `--iters` timed iterations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import ml_collections

from rlhfjax import parallel
from rlhfjax.models import api, init_params, init_scalar_params, preset
from rlhfjax.objectives import kl_control
from rlhfjax.objectives import ppo as ppo_objective
from rlhfjax.online import runner
from rlhfjax.online.roles import Role, Roles
from rlhfjax.recipes import ppo as ppo_recipe
from rlhfjax.sampling import SamplingConfig
from rlhfjax.train import default_optim_config

SHAPES = {
    # = experiments/toylab_sft.py's model (rlhfjax.config_blocks.toy_model_config) on the toy vocabulary
    "toy": dict(family="llama", vocab_size=240, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                intermediate_size=192, max_position_embeddings=64),
    "gpt2-124m": dict(family="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                      max_position_embeddings=1024),
}
PHASES = ("generate", "policy_logp", "reference", "score", "values", "advantages", "update")


def build(args):
    """(setup, state, advantage config, loss config, prompt batch): random models of the chosen shape
    as the recipe's roles on one device."""
    shape = dict(SHAPES[args.shape])
    cfg = preset(shape.pop("family"), dtype=args.dtype, **shape)
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
                                       temperature=0.7, remat=not args.no_remat)
    state = runner.create_state(setup, {"policy": roles.policy.params, "value": roles.value.params},
                                {"policy": roles.policy.shardings, "value": roles.value.shardings},
                                total_steps=1000, method_state=kl_control.AdaptiveKL.create())
    rng = np.random.default_rng(0)
    prompt = jnp.asarray(rng.integers(4, cfg.vocab_size, (args.batch, args.prompt_len)), jnp.int32)
    prompts = {"prompt_tokens_BxP": prompt, "prompt_mask_BxP": jnp.ones_like(prompt)}
    return setup, state, ppo_objective.AdvantageConfig(), lcfg, prompts


def iteration(setup, state, adv, lcfg, prompts, args, it):
    exp = ppo_recipe.collect(state, setup, prompts, jax.random.PRNGKey(100 + it), adv_cfg=adv)
    t = time.perf_counter()
    train, metrics = ppo_objective.ppo_update(state.train, exp["batch"], jax.random.PRNGKey(200 + it),
                                              loss_config=lcfg, epochs=args.epochs, num_minibatches=args.minibatches)
    jax.block_until_ready((train, metrics))
    times = {k[len("time/"):]: v for k, v in exp["metrics"].items() if k.startswith("time/")}
    times["update"] = time.perf_counter() - t
    return state.replace(train=train, method=exp["kl_state"]), times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="toy")
    ap.add_argument("--batch", type=int, default=64, help="rollouts per iteration (toy-lab default 64)")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--response-len", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minibatches", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations after the compiling one")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-remat", action="store_true", help="PPOLossConfig.remat=False (ratio 1 only to ~1 ulp)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    setup, state, adv, lcfg, prompts = build(args)
    reference = setup.roles.reference.params
    t0 = time.perf_counter()
    state, first = iteration(setup, state, adv, lcfg, prompts, args, 0)
    compile_s = time.perf_counter() - t0
    runs = []
    for it in range(1, args.iters + 1):
        state, times = iteration(setup, state, adv, lcfg, prompts, args, it)
        runs.append(times)
    med = {p: statistics.median(r[p] for r in runs) for p in PHASES}
    total = sum(med.values())
    tokens = args.batch * args.response_len
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  shape: {args.shape} "
          f"({sum(x.size for x in jax.tree.leaves(reference)) / 1e6:.1f}M params/model, {args.dtype})  "
          f"batch {args.batch}, prompt {args.prompt_len}, response {args.response_len}, "
          f"{args.epochs} epochs x {args.minibatches} minibatches, remat {not args.no_remat}")
    print(f"first iteration (compiles every phase): {compile_s:.2f} s")
    print("| phase | ms | share |")
    print("|---|---|---|")
    for p in PHASES:
        print(f"| {p} | {1e3 * med[p]:.1f} | {100 * med[p] / total:.0f}% |")
    print(f"| **iteration** | **{1e3 * total:.1f}** | 100% |")
    print(f"response tokens/s (whole iteration): {tokens / total:,.0f}; "
          f"generate only: {tokens / med['generate']:,.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": jax.devices()[0].device_kind, "compile_s": compile_s,
                       "median_s": med, "iteration_s": total, "tokens_per_s": tokens / total}, f, indent=1)


if __name__ == "__main__":
    main()
