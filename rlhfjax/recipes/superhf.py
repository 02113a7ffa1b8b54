"""`rlhfjax superhf`: SuperHF (Mukobi et al. 2023) on the online runner (objectives/superhf.py).

One iteration (`iterate`): `train.batch_size` prompts → `superhf.superbatch` completions each from the
current policy (T, top-p) → RM scores (normalised like PPO's, which does not change the ranking) →
the top `superhf.top_k` per prompt (empty completions last, as the official code drops them) →
`batch_size / superhf.prompt_accumulation` optimizer steps in one jit, each on the kept completions
of `prompt_accumulation` consecutive prompts: NLL + β · KL prior to the frozen reference.

With `train.batch_size == superhf.prompt_accumulation` this is the official loop exactly (sample,
filter, one step, repeat); a larger batch samples for several steps at once (cheaper per step on
an accelerator), so later steps of an iteration train on completions from a policy a few steps old.

Logged per iteration: reward/proxy (all completions: the current policy's reward), reward/proxy_kept,
reward/gold (toy lab, all completions), kl/seq_mean + kl/sqrt (Σ_t log π_T − log π_ref,T on the first
completion of each prompt: an unbiased draw from the policy), policy/entropy and superhf/nll,
superhf/kl_prior (kept completions), response/length (all) and response/length_kept,
superhf/eos_frac_kept, superhf/empty_frac.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import superhf as shf
from rlhfjax.harness import experience
from rlhfjax.objectives.core import has_eos, normalise
from rlhfjax.online import runner
from rlhfjax.train.update import minibatch_update


def steps_per_iteration(config) -> int:
    B, A, s = config.train.batch_size, config.superhf.prompt_accumulation, config.superhf
    if A < 1 or B % A:
        raise ConfigError(f"train.batch_size={B} must be a positive multiple of superhf.prompt_accumulation={A}")
    if not 1 <= s.top_k <= s.superbatch:
        raise ConfigError(f"superhf.top_k={s.top_k} must be in [1, superhf.superbatch={s.superbatch}]")
    if s.kl_prior not in shf.KL_PRIORS:
        raise ConfigError(f"superhf.kl_prior must be one of {shf.KL_PRIORS}, got {s.kl_prior!r}")
    return B // A


def non_empty(ro, eos_id):
    """Rows whose response has a token besides EOS (the official code drops empty completions)."""
    mask = ro.response_mask_BxN.astype(bool)
    real = mask if eos_id is None else mask & (ro.tokens_BxN != eos_id)
    return real.any(-1)


def iterate(state, prompts, rng, *, setup, loss_cfg):
    """One SuperHF iteration (module docstring; the runner's `Iterate`)."""
    s = setup.config.superhf
    S = s.superbatch
    sample_rng, update_rng = jax.random.split(rng)
    phases = experience.Phases()
    ro, raw = experience.sample_and_score(
        state.train.params["policy"], setup.roles.reward.params, prompts["prompt_tokens_BxP"],
        prompts["prompt_mask_BxP"], sample_rng, policy_cfg=setup.roles.policy.cfg, reward_cfg=setup.roles.reward.cfg,
        sampling=setup.sampling, num_samples=S, chunk_size=setup.config.train.batch_size, phases=phases,
        **experience.plain_prompts(prompts))
    score = normalise(raw, state.reward_gain, state.reward_bias)
    valid = non_empty(ro, setup.sampling.eos_id) if s.drop_empty else None
    keep = shf.top_k_per_group(score, S, s.top_k, valid)
    metrics = {**runner.sample_n_metrics(setup, state, ro, score, keep, S), **phases.times}
    kept = ro.tokens_BxN[keep], ro.response_mask_BxN[keep]
    metrics["superhf/eos_frac_kept"] = jnp.mean(has_eos(*kept, setup.sampling.eos_id).astype(jnp.float32))
    if valid is not None:
        metrics["superhf/empty_frac"] = 1.0 - jnp.mean(valid.astype(jnp.float32))
    batch = {"sequence_BxL": ro.sequence_BxL[keep], "sequence_mask_BxL": ro.sequence_mask_BxL[keep],
             "response_mask_BxN": kept[1]}
    t = time.perf_counter()
    frozen = setup.roles.reference.params if loss_cfg.kl_coef > 0 else None
    train, upd = minibatch_update(state.train, batch, frozen, update_rng, loss_fn=shf.loss_fn, config=loss_cfg,
                                  num_minibatches=steps_per_iteration(setup.config), shuffle=False)
    upd = jax.block_until_ready(jax.tree.map(jnp.mean, upd))
    return state.replace(train=train), {**metrics, **upd, "time/update": time.perf_counter() - t}, ro


def build(config, mesh):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests."""
    steps = steps_per_iteration(config)
    setup = runner.prepare(config, mesh, with_value=False)
    policy = setup.roles.policy
    loss_cfg = shf.SuperHFLossConfig(model=policy.cfg, num_response=setup.num_response,
                                     kl_coef=float(config.superhf.kl_coef), kl_prior=config.superhf.kl_prior)
    with parallel.activate(mesh):
        state = runner.create_state(setup, {"policy": policy.params}, {"policy": policy.shardings},
                                    total_steps=config.train.iterations * steps)
    return setup, state, functools.partial(iterate, setup=setup, loss_cfg=loss_cfg)


def run(config, workdir: str, mesh=None) -> dict:
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh)
    return runner.run_online(setup, workdir, state, step, name="superhf", chunk_size=config.train.batch_size,
                             log_keys=("reward/proxy", "reward/proxy_kept", "reward/gold", "kl/seq_mean",
                                       "superhf/kl_prior", "time/iteration"))
