"""`rlhfjax reinforce_pp`: REINFORCE++ (Hu 2025) on the online runner; its returns and global normalisation are
objectives/reinforce_pp.py, its loss objectives/group_pg.py's and its phases recipes/group_pg.py's.

One iteration (`iterate`): `train.batch_size` prompts → `reinforce_pp.samples_per_prompt` responses each (T,
top-p) → RM scores normalised like PPO's → log π_T (old) and log π_ref,T of the sampled tokens → token rewards
−β·KL_t plus the score on the last token, returns G_t = Σ_{s≥t} r_s, normalised over every valid token of the
whole batch → `epochs` × `num_minibatches` clipped-surrogate steps in one jit, A_t per token.

Logged: the sample-N metrics (`online.runner.sample_n_metrics`: reward/proxy, kl/seq_mean on each prompt's first
response, lengths), reward/gold (toy lab), reinforce_pp/return_mean and return_std (of G_t over the batch's
tokens, before normalisation), advantage/abs_mean, ppo/* ratio metrics (ppo/ratio_first_*: exactly 1),
policy/entropy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import reinforce_pp
from rlhfjax.objectives.core import masked_mean, masked_var
from rlhfjax.online import runner
from rlhfjax.recipes import group_pg


def rows_per_minibatch(config) -> int:
    m = config.reinforce_pp
    rows = config.train.batch_size * m.samples_per_prompt
    if m.samples_per_prompt < 1 or m.num_minibatches < 1 or rows % m.num_minibatches:
        raise ConfigError(f"train.batch_size × reinforce_pp.samples_per_prompt = {rows} rows must split into "
                          f"reinforce_pp.num_minibatches={m.num_minibatches} equal minibatches")
    return rows // m.num_minibatches


def iterate(state, prompts, rng, *, setup, loss_cfg):
    """One REINFORCE++ iteration (module docstring; the runner's `Iterate`)."""
    m = setup.config.reinforce_pp
    sample_rng, perm_rng = jax.random.split(rng)
    ro, score, logp, ref, kl_R, phases = group_pg.scored_rollout(
        state, prompts, sample_rng, setup=setup, num_samples=m.samples_per_prompt,
        chunk=rows_per_minibatch(setup.config))
    mask = ro.response_mask_BxN
    adv, g = reinforce_pp.advantages(score, logp, ref, mask, float(m.kl_coef))
    batch = {"sequence_BxL": ro.sequence_BxL, "sequence_mask_BxL": ro.sequence_mask_BxL, "response_mask_BxN": mask,
             "old_logp_BxN": logp, "advantages_BxN": adv}
    metrics = {**runner.sample_n_metrics(setup, state, ro, score, jnp.arange(score.shape[0]), m.samples_per_prompt,
                                         kl_R), **phases.times,
               "reinforce_pp/return_mean": masked_mean(g, mask),
               "reinforce_pp/return_std": jnp.sqrt(masked_var(g, mask)),
               "advantage/abs_mean": masked_mean(jnp.abs(adv), mask)}
    state, metrics = group_pg.update(state, batch, metrics, perm_rng, loss_cfg=loss_cfg, epochs=m.epochs,
                                     num_minibatches=m.num_minibatches)
    return state, metrics, ro


def build(config, mesh):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests."""
    m = config.reinforce_pp
    rows_per_minibatch(config)
    setup, state = group_pg.create(config, mesh, steps_per_iteration=m.epochs * m.num_minibatches)
    loss_cfg = group_pg.loss_config(setup, m, "reinforce_pp")
    return setup, state, functools.partial(iterate, setup=setup, loss_cfg=loss_cfg)


def run(config, workdir: str, mesh=None) -> dict:
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh)
    return runner.run_online(setup, workdir, state, step, name="reinforce_pp", chunk_size=rows_per_minibatch(config),
                             log_keys=("reward/proxy", "reward/gold", "kl/seq_mean", "ppo/clipfrac",
                                       "time/iteration"))[0]
