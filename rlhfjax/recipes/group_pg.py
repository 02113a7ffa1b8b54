"""RLOO and GRPO on the online runner (objectives/group_pg.py); `rlhfjax rloo` and `rlhfjax grpo` are
this recipe with `method="rloo"` / `"grpo"`, configured by the `config.rloo` / `config.grpo` section.

One iteration (`iterate`): `train.batch_size` prompts → `group_size` completions each (T, top-p) → RM
scores, normalised like PPO's → log π_T (old) and log π_ref,T of the sampled tokens, in chunks of the
minibatch (the loss's own forward, so the first ratio is exactly 1) → group advantages (RLOO: of score
− β·KL_seq; GRPO: of the score) → `epochs` × `num_minibatches` clipped-surrogate steps in one jit.

Logged: the sample-N metrics (`online.runner.sample_n_metrics`: reward/proxy, kl/seq_mean on each
prompt's first completion, lengths), reward/gold (toy lab), kl/seq_mean_all (all completions),
advantage/abs_mean, ppo/* ratio metrics (ppo/ratio_first_* of the first minibatch), policy/entropy.

The pieces every critic-free method on this loss shares are here too (`scored_rollout`, `update`,
`loss_config`, `create`): `recipes/remax.py` and `recipes/reinforce_pp.py` are built from them.
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
from rlhfjax.objectives.core import check_first_ratio, normalise, sequence_kl, summarise_update
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


def scored_rollout(state, prompts, rng, *, setup, num_samples: int, chunk: int):
    """The phases every critic-free method here starts with (RLOO, GRPO, ReMax, REINFORCE++): `num_samples`
    completions per prompt (T, top-p), RM scores normalised like PPO's, log π_T (old) and log π_ref,T of the
    sampled tokens in chunks of `chunk` rows (the loss's own forward, so the first ratio is exactly 1) →
    (rollout, score_R, logp_RxN, ref_logp_RxN, Σ_t k1 per row, the timed phases)."""
    roles, phases = setup.roles, experience.Phases()
    ro, raw = experience.sample_and_score(
        state.train.params["policy"], roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
        rng, policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg, sampling=setup.sampling,
        num_samples=num_samples, chunk_size=chunk, phases=phases, **experience.plain_prompts(prompts))
    seq, smask, mask = ro.sequence_BxL, ro.sequence_mask_BxL, ro.response_mask_BxN
    kw = dict(model_cfg=roles.policy.cfg, num_response=setup.num_response, temperature=setup.sampling.temperature,
              chunk_size=chunk)
    logp = phases("policy_logp", experience.logp_phase(state.train.params["policy"], seq, smask, **kw))
    ref = phases("reference", experience.logp_phase(roles.reference.params, seq, smask, **kw))
    score = normalise(raw, state.reward_gain, state.reward_bias)
    return ro, score, logp, ref, sequence_kl(logp, ref, mask, "k1"), phases


def update(state, batch, metrics, rng, *, loss_cfg, epochs: int, num_minibatches: int):
    """`epochs` × `num_minibatches` steps of the clipped surrogate in one jit → (state, metrics + the update's)."""
    t = time.perf_counter()
    train, upd = minibatch_update(state.train, batch, None, rng, loss_fn=group_pg.loss_fn, config=loss_cfg,
                                  epochs=epochs, num_minibatches=num_minibatches)
    upd = jax.block_until_ready(summarise_update(upd))
    return state.replace(train=train), {**metrics, **upd, "time/update": time.perf_counter() - t}


def iterate(state, prompts, rng, *, setup, method, loss_cfg):
    """One RLOO/GRPO iteration (module docstring; the runner's `Iterate`)."""
    m = setup.config[method]
    k = m.group_size
    sample_rng, perm_rng = jax.random.split(rng)
    ro, score, logp, ref, kl_R, phases = scored_rollout(state, prompts, sample_rng, setup=setup, num_samples=k,
                                                        chunk=rows_per_minibatch(setup.config, method))
    if method == "rloo":
        adv = group_pg.rloo_advantages(score - m.kl_coef * kl_R, k)
    else:
        adv = group_pg.grpo_advantages(score, k, scale_by_std=bool(m.scale_by_std))
    batch = {"sequence_BxL": ro.sequence_BxL, "sequence_mask_BxL": ro.sequence_mask_BxL,
             "response_mask_BxN": ro.response_mask_BxN, "old_logp_BxN": logp, "advantages_B": adv,
             **({"ref_logp_BxN": ref} if loss_cfg.kl_coef > 0 else {})}
    metrics = {**runner.sample_n_metrics(setup, state, ro, score, jnp.arange(score.shape[0]), k, kl_R), **phases.times,
               "kl/seq_mean_all": jnp.mean(kl_R), "advantage/abs_mean": jnp.mean(jnp.abs(adv))}
    state, metrics = update(state, batch, metrics, perm_rng, loss_cfg=loss_cfg, epochs=m.epochs,
                            num_minibatches=m.num_minibatches)
    return state, metrics, ro


def loss_config(setup, m, section: str, **fields) -> group_pg.GroupLossConfig:
    """The clipped surrogate's config from a method's section (`aggregation`, `first_ratio`, `remat`, and `clip`
    where it has one) and `fields`; its names checked now, not at the first step."""
    cfg = group_pg.GroupLossConfig(
        model=setup.roles.policy.cfg, num_response=setup.num_response, temperature=setup.sampling.temperature,
        aggregation=m.aggregation, remat=bool(m.remat), first_ratio=m.first_ratio,
        **({"clip": float(m.clip)} if "clip" in m else {}), **fields)
    group_pg.aggregate(jnp.zeros((1, 1)), jnp.ones((1, 1)), cfg.aggregation)  # fail early on a bad name
    check_first_ratio(cfg.first_ratio, cfg.remat, section)
    return cfg


def create(config, mesh, steps_per_iteration: int):
    """(setup, fresh state) of a policy-only online method: roles on `mesh`, its LR schedule over every step."""
    setup = runner.prepare(config, mesh, with_value=False)
    policy = setup.roles.policy
    with parallel.activate(mesh):
        state = runner.create_state(setup, {"policy": policy.params}, {"policy": policy.shardings},
                                    total_steps=config.train.iterations * steps_per_iteration)
    return setup, state


def build(config, mesh, method: str):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    rows_per_minibatch(config, method)
    m = config[method]
    setup, state = create(config, mesh, m.epochs * m.num_minibatches)
    # RLOO's KL is k1, in the reward; GRPO's is in the loss
    loss_cfg = loss_config(setup, m, method, **({"kl_coef": float(m.kl_coef), "kl_estimator": m.kl_estimator}
                                                if method == "grpo" else {}))
    return setup, state, functools.partial(iterate, setup=setup, method=method, loss_cfg=loss_cfg)


def run_with_state(config, workdir: str, mesh=None, *, method: str):
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh, method)
    return runner.run_online(setup, workdir, state, step, name=method, chunk_size=rows_per_minibatch(config, method),
                             log_keys=("reward/proxy", "reward/gold", "kl/seq_mean", "ppo/clipfrac", "time/iteration"))
