"""RLOO and GRPO on the online runner (objectives/group_pg.py); `rlhfjax rloo` and `rlhfjax grpo` are
this recipe with `method="rloo"` / `"grpo"`, configured by the `config.rloo` / `config.grpo` section.

One iteration (`iterate`): `train.batch_size` prompts → `group_size` completions each (T, top-p) → RM
scores, normalised like PPO's → log π_T (old) and log π_ref,T of the sampled tokens, in chunks of the
minibatch (the loss's own forward, so the first ratio is exactly 1) → group advantages (RLOO: of score
− β·KL_seq; GRPO: of the score) → `epochs` × `num_minibatches` clipped-surrogate steps in one jit.

Logged: the sample-N metrics (`online.runner.sample_n_metrics`: reward/proxy, kl/seq_mean on each
prompt's first completion, lengths), reward/gold (toy lab), kl/seq_mean_all (all completions),
advantage/abs_mean, ppo/* ratio metrics (ppo/ratio_first_* of the first minibatch), policy/entropy.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import group_pg
from rlhfjax.harness import experience
from rlhfjax.objectives.core import check_first_ratio, kl_per_token, normalise, summarise_update
from rlhfjax.online import runner
from rlhfjax.train.update import minibatch_update

METHODS = ("rloo", "grpo")


def rows_per_minibatch(config, method: str) -> int:
    m = config[method]
    rows = config.train.batch_size * m.group_size
    if m.group_size < 2 or m.num_minibatches < 1 or rows % m.num_minibatches:
        raise ConfigError(f"{method}.group_size={m.group_size} must be >= 2 and train.batch_size × group_size = "
                          f"{rows} divisible by {method}.num_minibatches={m.num_minibatches}")
    return rows // m.num_minibatches


def iterate(state, prompts, rng, *, setup, method, loss_cfg):
    """One RLOO/GRPO iteration (module docstring; the runner's `Iterate`)."""
    m = setup.config[method]
    k, chunk, roles = m.group_size, rows_per_minibatch(setup.config, method), setup.roles
    sample_rng, perm_rng = jax.random.split(rng)
    phases = experience.Phases()
    ro, raw = experience.sample_and_score(
        state.train.params["policy"], roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
        sample_rng, policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg, sampling=setup.sampling,
        num_samples=k, chunk_size=chunk, phases=phases, **experience.plain_prompts(prompts))
    seq, smask, mask = ro.sequence_BxL, ro.sequence_mask_BxL, ro.response_mask_BxN
    kw = dict(model_cfg=roles.policy.cfg, num_response=setup.num_response, temperature=setup.sampling.temperature,
              chunk_size=chunk)
    logp = phases("policy_logp", experience.logp_phase(state.train.params["policy"], seq, smask, **kw))
    ref = phases("reference", experience.logp_phase(roles.reference.params, seq, smask, **kw))
    score = normalise(raw, state.reward_gain, state.reward_bias)
    kl_R = jnp.sum(jnp.where(mask.astype(bool), kl_per_token(logp, ref, "k1"), 0.0), axis=-1)
    if method == "rloo":
        adv = group_pg.rloo_advantages(score - m.kl_coef * kl_R, k)
    else:
        adv = group_pg.grpo_advantages(score, k, scale_by_std=bool(m.scale_by_std))
    batch = {"sequence_BxL": seq, "sequence_mask_BxL": smask, "response_mask_BxN": mask, "old_logp_BxN": logp,
             "advantages_B": adv, **({"ref_logp_BxN": ref} if loss_cfg.kl_coef > 0 else {})}
    metrics = {**runner.sample_n_metrics(setup, state, ro, score, jnp.arange(score.shape[0]), k, kl_R), **phases.times,
               "kl/seq_mean_all": jnp.mean(kl_R), "advantage/abs_mean": jnp.mean(jnp.abs(adv))}
    t = time.perf_counter()
    train, upd = minibatch_update(state.train, batch, None, perm_rng, loss_fn=group_pg.loss_fn, config=loss_cfg,
                                  epochs=m.epochs, num_minibatches=m.num_minibatches)
    upd = jax.block_until_ready(summarise_update(upd))
    return state.replace(train=train), {**metrics, **upd, "time/update": time.perf_counter() - t}, ro


def build(config, mesh, method: str):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    rows_per_minibatch(config, method)
    m = config[method]
    setup = runner.prepare(config, mesh, with_value=False)
    policy = setup.roles.policy
    loss_cfg = group_pg.GroupLossConfig(
        model=policy.cfg, num_response=setup.num_response, temperature=setup.sampling.temperature,
        clip=float(m.clip), kl_coef=float(m.kl_coef) if method == "grpo" else 0.0,
        aggregation=m.aggregation, remat=bool(m.remat), first_ratio=m.first_ratio,
        **({"kl_estimator": m.kl_estimator} if method == "grpo" else {}))  # RLOO's KL is k1, in the reward
    group_pg.aggregate(jnp.zeros((1, 1)), jnp.ones((1, 1)), loss_cfg.aggregation)  # fail early on a bad name
    check_first_ratio(loss_cfg.first_ratio, loss_cfg.remat, method)
    with parallel.activate(mesh):
        state = runner.create_state(setup, {"policy": policy.params}, {"policy": policy.shardings},
                                    total_steps=config.train.iterations * m.epochs * m.num_minibatches)
    return setup, state, functools.partial(iterate, setup=setup, method=method, loss_cfg=loss_cfg)


def run_with_state(config, workdir: str, mesh=None, *, method: str):
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh, method)
    return runner.run_online(setup, workdir, state, step, name=method, chunk_size=rows_per_minibatch(config, method),
                             log_keys=("reward/proxy", "reward/gold", "kl/seq_mean", "ppo/clipfrac", "time/iteration"))
