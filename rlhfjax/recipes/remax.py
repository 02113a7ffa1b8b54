"""`rlhfjax remax`: ReMax (Li et al. 2023) on the online runner; its advantages are objectives/remax.py, its
loss objectives/group_pg.py's and its phases recipes/group_pg.py's.

One iteration (`iterate`): `train.batch_size` prompts → one sampled response each (T, top-p), RM-scored and
normalised like PPO's, with log π_T and log π_ref,T of its tokens → one greedy response each (argmax,
`SamplingConfig(greedy=True)`), scored by the same RM and normaliser → A = r(y) − β·KL(y) − r(ȳ) → one
REINFORCE step (the clipped surrogate at ratio exactly 1).

Logged: the sample-N metrics (`online.runner.sample_n_metrics`: reward/proxy and kl/seq_mean of the samples,
lengths), reward/gold (toy lab, the samples), remax/greedy_reward (normalised RM score of the greedy responses),
remax/same_as_greedy (fraction of samples equal to their greedy response: no signal), advantage/abs_mean,
ppo/* ratio metrics (ppo/ratio_first_*: exactly 1), policy/entropy.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.harness import experience
from rlhfjax.objectives import remax
from rlhfjax.objectives.core import normalise
from rlhfjax.online import runner
from rlhfjax.recipes import group_pg


def iterate(state, prompts, rng, *, setup, loss_cfg):
    """One ReMax iteration (module docstring; the runner's `Iterate`)."""
    B, roles = setup.config.train.batch_size, setup.roles
    sample_rng, perm_rng = jax.random.split(rng)
    ro, score, logp, _, kl_B, phases = group_pg.scored_rollout(state, prompts, sample_rng, setup=setup,
                                                                num_samples=1, chunk=B)
    greedy, raw = phases("greedy", experience.sample_and_score(
        state.train.params["policy"], roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
        sample_rng, policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg, chunk_size=B,
        sampling=dataclasses.replace(setup.sampling, greedy=True), **experience.plain_prompts(prompts)))
    greedy_score = normalise(raw, state.reward_gain, state.reward_bias)
    adv = remax.advantages(score, greedy_score, kl_B, float(setup.config.remax.kl_coef))
    same = remax.same_response(ro.tokens_BxN, ro.response_mask_BxN, greedy.tokens_BxN, greedy.response_mask_BxN)
    batch = {"sequence_BxL": ro.sequence_BxL, "sequence_mask_BxL": ro.sequence_mask_BxL,
             "response_mask_BxN": ro.response_mask_BxN, "old_logp_BxN": logp, "advantages_B": adv}
    metrics = {**runner.sample_n_metrics(setup, state, ro, score, jnp.arange(B), 1, kl_B), **phases.times,
               "remax/greedy_reward": jnp.mean(greedy_score), "advantage/abs_mean": jnp.mean(jnp.abs(adv)),
               "remax/same_as_greedy": jnp.mean(same.astype(jnp.float32))}
    state, metrics = group_pg.update(state, batch, metrics, perm_rng, loss_cfg=loss_cfg, epochs=1, num_minibatches=1)
    return state, metrics, ro


def build(config, mesh):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests."""
    setup, state = group_pg.create(config, mesh, steps_per_iteration=1)
    loss_cfg = group_pg.loss_config(setup, config.remax, "remax")
    return setup, state, functools.partial(iterate, setup=setup, loss_cfg=loss_cfg)


def run(config, workdir: str, mesh=None) -> dict:
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh)
    return runner.run_online(setup, workdir, state, step, name="remax", chunk_size=config.train.batch_size,
                             log_keys=("reward/proxy", "remax/greedy_reward", "reward/gold", "kl/seq_mean",
                                       "time/iteration"))[0]
