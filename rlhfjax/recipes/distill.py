"""`rlhfjax distill`: context distillation (objectives/context_distill.py) on the online runner.

The teacher is the frozen initial policy (the reference role: `policy.init_from`, or `reference.init_from`)
shown `prompt.context_file` before every prompt; the student (the trained policy) starts from the same
weights and sees the prompt alone. One iteration (`iterate`): `train.batch_size` training prompts →
one response each from the prompted teacher (T = `distill.temperature`), or with
`distill.responses=dataset` the next `train.batch_size` demonstrations (the toy lab's SFT set, or the
`{prompt, response}` rows of `data.source`) → `distill.epochs` × `distill.num_minibatches` optimizer
steps in one jit on KL(teacher ‖ student) over the vocabulary at every response token.

Evals sample the *student* without the context (the runner's held-out evals; KL from the unprompted
initial policy), so iteration 0 is the plain policy. Before training, the prompted teacher itself is
evaluated on the same prompts and keys (`summary.json["teacher_eval"]`): the "policy with the context"
row on the same axes. A reward model is optional (`reward.init_from` empty: no proxy reward); the toy
lab's gold and behaviour metrics are logged at every eval. Training rows' `reward/gold` is the gold of
the teacher's samples (what the student is distilled on).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.data.hh import load_sft
from rlhfjax.data.sources import resolve_source
from rlhfjax.data.tokenizing import encoder_for, read_context
from rlhfjax.choices import DISTILL_RESPONSES as RESPONSES
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import context_distill as cd
from rlhfjax.harness import experience
from rlhfjax.online import runner
from rlhfjax.sampling import Rollout, SamplingConfig
from rlhfjax.train.update import minibatch_update


def check(config) -> None:
    d = config.distill
    if d.responses not in RESPONSES:
        raise ConfigError(f"distill.responses must be one of {RESPONSES}, got {d.responses!r}")
    if not read_context(config):
        raise ConfigError("context distillation needs prompt.context_file (the teacher's context)")
    if d.num_minibatches < 1 or config.train.batch_size % d.num_minibatches:
        raise ConfigError(f"train.batch_size={config.train.batch_size} must be a positive multiple of "
                          f"distill.num_minibatches={d.num_minibatches}")


def dataset_rollout(prompts) -> Rollout:
    """A dataset's responses after the teacher's prompts, in a rollout's layout (log-probs unused)."""
    tokens, mask = prompts["response_tokens_BxN"], prompts["response_mask_BxN"]
    zeros = jnp.zeros(tokens.shape, jnp.float32)
    return Rollout(tokens_BxN=tokens, response_mask_BxN=mask, logp_BxN=zeros, policy_logp_BxN=zeros,
                   sequence_BxL=jnp.concatenate([prompts["prompt_tokens_BxP"], tokens], axis=1),
                   sequence_mask_BxL=jnp.concatenate([prompts["prompt_mask_BxP"], mask], axis=1))


def iterate(state, prompts, rng, *, setup, loss_cfg, teacher_sampling: SamplingConfig):
    """One iteration (module docstring; the runner's `Iterate`). `prompts` carry the teacher's (context)
    and the plain prompts, and with `distill.responses=dataset` the dataset's responses."""
    d, teacher = setup.config.distill, setup.roles.reference
    sample_rng, perm_rng = jax.random.split(rng)
    phases = experience.Phases()
    if "response_tokens_BxN" in prompts:
        ro = dataset_rollout(prompts)
    else:
        ro = phases("generate", experience.sample_phase(teacher.params, prompts["prompt_tokens_BxP"],
                                                        prompts["prompt_mask_BxP"], sample_rng,
                                                        model_cfg=teacher.cfg, cfg=teacher_sampling))
    seq, smask = experience.judged_sequence(ro, **experience.plain_prompts(prompts))
    batch = {"sequence_BxL": seq, "sequence_mask_BxL": smask, "teacher_sequence_BxL": ro.sequence_BxL,
             "teacher_sequence_mask_BxL": ro.sequence_mask_BxL, "response_mask_BxN": ro.response_mask_BxN}
    t = time.perf_counter()
    train, upd = minibatch_update(state.train, batch, teacher.params, perm_rng, loss_fn=cd.loss_fn, config=loss_cfg,
                                  epochs=d.epochs, num_minibatches=d.num_minibatches)
    upd = jax.block_until_ready(jax.tree.map(jnp.mean, upd))
    metrics = {**phases.times, **upd, "time/update": time.perf_counter() - t,
               "response/length": jnp.mean(ro.response_mask_BxN.sum(-1).astype(jnp.float32))}
    return state.replace(train=train), metrics, ro


def build(config, mesh):
    """(setup, fresh state, iterate): the recipe's wiring, shared with tests."""
    check(config)
    setup = runner.prepare(config, mesh, with_value=False, reward_optional=True)
    # Training prompts carry the context (the teacher's view) and the plain prompts (the student's);
    # evals sample the student on plain prompts.
    setup.rollout_encoder = setup.encoder
    setup.encoder = encoder_for(config, setup.tokenizer, with_context=False)
    policy = setup.roles.policy
    loss_cfg = cd.DistillLossConfig(model=policy.cfg, num_response=setup.num_response,
                                    temperature=float(config.distill.loss_temperature))
    teacher_sampling = dataclasses.replace(setup.sampling, temperature=float(config.distill.temperature))
    d = config.distill
    with parallel.activate(mesh):
        state = runner.create_state(setup, {"policy": policy.params}, {"policy": policy.shardings},
                                    total_steps=config.train.iterations * d.epochs * d.num_minibatches)
    return setup, state, functools.partial(iterate, setup=setup, loss_cfg=loss_cfg, teacher_sampling=teacher_sampling)


def teacher_eval(setup, mesh, gain, bias) -> dict:
    """The prompted teacher on the runner's held-out prompts with the runner's eval keys and the run's
    reward normaliser: the "initial policy with the context" row (KL from the unprompted initial policy)."""
    with parallel.activate(mesh):
        judge = runner.evaluator(setup, "", name="teacher eval", encoder=setup.rollout_encoder)
        return dataclasses.replace(judge, samples_path=None)(setup.roles.reference.params, gain, bias, step=0)


def run(config, workdir: str, mesh=None) -> dict:
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh)

    def teacher(s) -> dict:
        out = teacher_eval(setup, mesh, s.reward_gain, s.reward_bias) if config.train.eval_every else {}
        print("distill: the prompted teacher: " + ", ".join(f"{k[5:]} {out[k]:.4g}" for k in TEACHER_KEYS if k in out),
              flush=True)
        return {"teacher_eval": out}

    examples = None
    if config.distill.responses == "dataset":
        source, data_dir = resolve_source(config.data, "sft")
        examples, report = load_sft(source, data_dir=data_dir, split=config.data.train_split,
                                    limit=config.data.limit or None)
        print(f"distill demonstrations: {report.summary()}", flush=True)
    return runner.run_online(setup, workdir, state, step, name="distill",
                             log_keys=("distill/kl", "reward/gold", "policy/entropy", "time/iteration"),
                             summary_extra=teacher, examples=examples)


TEACHER_KEYS = ("eval/reward/gold", "eval/kl/seq_mean", "eval/refusal/harmful", "eval/refusal/benign")
