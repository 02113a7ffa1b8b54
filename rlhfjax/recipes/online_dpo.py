"""`rlhfjax online_dpo`: online DPO / OAIF (Guo et al. 2024) on the online runner (objectives/online_dpo.py).

One iteration (`iterate`): `train.batch_size` prompts → two samples each from the current policy → each judged
(`online_dpo.judge`: "reward" = the RM, normalised like PPO's, which keeps its order; "gold" = the toy lab's gold
reward, an oracle) → a (chosen, rejected) pair per prompt in `collate_pairs`' layout, ties weighted 0, with the
reference's summed log-probs (T = 1) → `epochs` × `num_minibatches` steps of `objectives.dpo.loss_fn` (dpo|ipo|cdpo).

Logged: the sample-N metrics (`online.runner.sample_n_metrics`; reward/proxy_kept: the chosen samples'), reward/gold,
online_dpo/tie_frac, online_dpo/judge_gap, the update's dpo/* means and dpo/loss_first (log 2 at π_θ = π_ref).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time

import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.data.sources import is_toylab
from rlhfjax.data.tokenizing import decode_rows
from rlhfjax.errors import ConfigError
from rlhfjax.harness import experience
from rlhfjax.objectives import dpo
from rlhfjax.objectives.core import normalise
from rlhfjax.objectives.online_dpo import identical_pairs, pair_by_judge, pairs_batch
from rlhfjax.online import runner
from rlhfjax.train.update import minibatch_update

reference_column = jax.jit(dpo.reference_column, static_argnames="model_cfg")  # the loss's own log-probs, T = 1


def policy_loss(params, batch, *, frozen, config, rng):
    """`objectives.dpo.loss_fn` of the runner's trainable params, {"policy": ...}."""
    return dpo.loss_fn(params["policy"], batch, frozen=frozen, config=config, rng=rng)


def gold_scores(setup, ro, prompts):
    """Gold reward of each sample, from this process's rows (prompts without a context, unstripped: HH turns)."""
    key, local = "plain_prompt" if "plain_prompt_tokens_BxP" in prompts else "prompt", parallel.local_rows
    texts = [setup.tokenizer.decode(t[m > 0], skip_special_tokens=True)
             for t, m in zip(local(prompts[f"{key}_tokens_BxP"]), local(prompts[f"{key}_mask_BxP"]))]
    gold = setup.gold_fn([t for t in texts for _ in range(2)],
                         decode_rows(setup.tokenizer, local(ro.tokens_BxN), local(ro.response_mask_BxN)))
    return parallel.shard_batch(gold, setup.mesh, process_rows=True)


def iterate(state, prompts, rng, *, setup, loss_cfg):
    """One online DPO iteration (module docstring; the runner's `Iterate`)."""
    o, roles, B = setup.config.online_dpo, setup.roles, setup.config.train.batch_size
    (sample_rng, update_rng), phases = jax.random.split(rng), experience.Phases()
    ro, raw = experience.sample_and_score(
        state.train.params["policy"], roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
        sample_rng, policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg, sampling=setup.sampling,
        num_samples=2, chunk_size=B, phases=phases, **experience.plain_prompts(prompts))
    score = normalise(raw, state.reward_gain, state.reward_bias)
    judged = score if o.judge == "reward" else phases("gold_judge", gold_scores(setup, ro, prompts))
    chosen, rejected, weight = pair_by_judge(judged, identical_pairs(ro.tokens_BxN, ro.response_mask_BxN))
    batch = pairs_batch(ro.sequence_BxL, ro.sequence_mask_BxL, ro.response_mask_BxN, chosen, rejected, weight,
                        setup.sampling.pad_id)
    batch.update(phases("reference", reference_column(roles.reference.params, batch, model_cfg=roles.policy.cfg)))
    gap = jnp.sum(weight * (judged[chosen] - judged[rejected])) / jnp.maximum(jnp.sum(weight), 1.0)
    metrics = {**runner.sample_n_metrics(setup, state, ro, score, chosen, 2), **phases.times,
               "online_dpo/tie_frac": 1.0 - jnp.mean(weight), "online_dpo/judge_gap": gap}
    t = time.perf_counter()
    train, upd = minibatch_update(state.train, batch, None, update_rng, loss_fn=policy_loss, config=loss_cfg,
                                  epochs=o.epochs, num_minibatches=o.num_minibatches)
    upd = jax.block_until_ready({**jax.tree.map(jnp.mean, upd), "dpo/loss_first": upd["dpo/loss"][0]})
    return state.replace(train=train), {**metrics, **upd, "time/update": time.perf_counter() - t}, ro


def build(config, mesh):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests. Bad settings stop before loading."""
    o, B = config.online_dpo, config.train.batch_size
    if o.judge == "gold" and not is_toylab(config.data):
        raise ConfigError(f"online_dpo.judge='gold' needs the toy lab's gold reward, not data.source="
                          f"{config.data.source!r}", "use online_dpo.judge=reward (the reward model)")
    if B % o.num_minibatches:  # the section's choices and ranges are checked at load (commands/online_dpo.py)
        raise ConfigError(f"train.batch_size={B} is not a multiple of online_dpo.num_minibatches={o.num_minibatches}")
    loss = {f.name: o[f.name] for f in dataclasses.fields(dpo.DPOLossConfig) if f.name in o}  # whatever it gains
    try:  # a bad combination fails here, before anything loads, named as this section's fields
        dpo.DPOLossConfig(model=None, **loss)
    except ConfigError as e:
        raise ConfigError(*(re.sub(r"\bdpo\.", "online_dpo.", m) for m in (e.what, e.fix))) from None
    setup = runner.prepare(config, mesh, with_value=False)
    policy = setup.roles.policy
    with parallel.activate(mesh):
        state = runner.create_state(setup, {"policy": policy.params}, {"policy": policy.shardings},
                                    total_steps=config.train.iterations * o.epochs * o.num_minibatches)
    return setup, state, functools.partial(iterate, setup=setup, loss_cfg=dpo.DPOLossConfig(model=policy.cfg, **loss))


def run(config, workdir: str, mesh=None) -> dict:
    setup, state, step = build(config, mesh if mesh is not None else parallel.make_mesh(config.mesh))
    keys = ("reward/proxy", "reward/gold", "kl/seq_mean", "dpo/loss", "online_dpo/tie_frac", "time/iteration")
    return runner.run_online(setup, workdir, state, step, name="online_dpo", chunk_size=config.train.batch_size,
                             log_keys=keys)[0]
