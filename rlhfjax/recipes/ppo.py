"""`rlhfjax ppo`: PPO-RLHF against a frozen reward model (Ziegler et al. 2019; Bai et al. 2022).

One iteration (`iterate`): sample one response per prompt from the current policy → RM score at the
last token (normalised so the initial policy's scores are N(0, 1)) → policy and reference log-probs
→ values → rewards = score − β·KL per token → GAE → whitening (each phase one jit, timed:
`harness.experience`), then `ppo.epochs` × `ppo.num_minibatches` optimizer steps in ONE jit
(`train.update.minibatch_update` of `objectives.ppo.loss_fn`). Everything around it — prompts, roles on
`config.mesh`, the normaliser, held-out evals, checkpoints with exact resume, HF export, summary — is the
online runner's (`online.runner`).

State: trainable params `{"policy": LM, "value": ScalarModel}` (or, with `value.model=policy_head`,
a `ValueHead` on the policy's hidden states) under one optimizer and one loss
`policy + value_coef·value − entropy_coef·entropy`; the KL controller is the method state.
"""

from __future__ import annotations

import functools
import time

import jax

from rlhfjax import parallel
from rlhfjax.choices import EXPERIENCE_JITS
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import kl_control
from rlhfjax.objectives import ppo as ppo_objective
from rlhfjax.objectives.core import check_first_ratio, summarise_update
from rlhfjax.harness import experience
from rlhfjax.harness.state import PolicyState
from rlhfjax.online import runner
from rlhfjax.train.update import minibatch_update

def kl_controller(kl_config):
    if kl_config.controller == "adaptive":
        return kl_control.AdaptiveKL.create(kl_config.init_coef, kl_config.target, kl_config.horizon)
    if kl_config.controller == "fixed":
        return kl_control.FixedKL.create(kl_config.init_coef)
    raise ConfigError(f"kl.controller must be one of {kl_control.CONTROLLERS}, got {kl_config.controller!r}")


def minibatch_size(config) -> int:
    B, M = config.train.batch_size, config.ppo.num_minibatches
    if M < 1 or B % M:
        raise ConfigError(f"train.batch_size={B} must be a positive multiple of ppo.num_minibatches={M}")
    return B // M


def advantage_config(config, eos_id) -> ppo_objective.AdvantageConfig:
    r, p = config.reward, config.ppo
    if r.penalise_no_eos and eos_id is None:  # every score would become the penalty
        raise ConfigError("reward.penalise_no_eos=True but the tokenizer has no EOS token",
                          "set reward.penalise_no_eos=False, or use a tokenizer with an EOS token")
    return ppo_objective.AdvantageConfig(
        kl_estimator=config.kl.estimator, gamma=float(p.gamma), lam=float(p.lam),
        whiten_rewards=bool(p.whiten_rewards), whiten_advantages=bool(p.whiten_advantages),
        score_clip=float(r.score_clip) if r.score_clip > 0 else None,
        no_eos_penalty=float(r.no_eos_penalty) if r.penalise_no_eos else None, eos_id=eos_id)


def loss_config(config, setup: runner.OnlineSetup) -> ppo_objective.PPOLossConfig:
    p, value = config.ppo, setup.roles.value
    check_first_ratio(p.first_ratio, bool(p.remat))
    return ppo_objective.PPOLossConfig(
        policy_model=setup.roles.policy.cfg, value_model=None if setup.roles.value_on_policy else value.cfg,
        num_response=setup.num_response, temperature=setup.sampling.temperature, clip=float(p.clip),
        value_clip=float(p.value_clip), value_coef=float(p.value_coef), entropy_coef=float(p.entropy_coef),
        remat=bool(p.remat), remat_policy=p.remat_policy, first_ratio=p.first_ratio)


def _scored_experience(params, reference, reward, ro, plain, kl_state, gain, bias, *, cfgs, chunk, adv_cfg,
                       value_on_policy, phases):
    """RM score (on the judges' view of the rollout), policy log-probs and values, reference log-probs and
    the advantages of one rollout, phase by phase (`phases` times each, or traces them into one jit).
    `cfgs` = (policy, reward, value (None: a head on the policy) model configs, sampling temperature)."""
    policy_cfg, reward_cfg, value_cfg, T = cfgs
    N = ro.tokens_BxN.shape[1]
    seq, smask = ro.sequence_BxL, ro.sequence_mask_BxL
    raw_score = phases("score", experience.score_phase(reward, *experience.judged_sequence(ro, **plain),
                                                       model_cfg=reward_cfg, chunk_size=chunk))
    kw = dict(model_cfg=policy_cfg, num_response=N, temperature=T, chunk_size=chunk)
    if value_on_policy:  # one forward gives log-probs and values
        logp, values = phases("policy_logp", experience.logp_value_phase((params["policy"], params["value"]), seq,
                                                                         smask, **kw))
    else:
        logp = phases("policy_logp", experience.logp_phase(params["policy"], seq, smask, **kw))
        values = phases("values", experience.value_phase(params["value"], seq, smask, model_cfg=value_cfg,
                                                         num_response=N, chunk_size=chunk))
    ref_logp = phases("reference", experience.logp_phase(reference, seq, smask, **kw))
    out = phases("advantages", ppo_objective.experience_batch(raw_score, logp, ref_logp, values, ro, kl_state, gain,
                                                               bias, cfg=adv_cfg))
    return (*out, raw_score, ref_logp)


_UNTIMED = experience.Phases(timed=False)
# The same phases as one program: no host round trip between them, buffers shared (`ppo.experience_jit`).
_fused_experience = jax.jit(functools.partial(_scored_experience, phases=_UNTIMED),
                            static_argnames=("cfgs", "chunk", "adv_cfg", "value_on_policy"))


def fuse_experience(choice: str) -> bool:
    """`ppo.experience_jit`: fused (one program after generation), phases (one jit each), or auto: fused on an
    accelerator, where it saves a dispatch and sync per phase, phases on the CPU, where XLA runs one op after
    another anyway and the fused program measured slower and costs its own compile (docs/benchmarks.md)."""
    if choice not in EXPERIENCE_JITS:
        raise ConfigError(f"ppo.experience_jit must be one of {EXPERIENCE_JITS}, got {choice!r}")
    return choice == "fused" or (choice == "auto" and jax.default_backend() != "cpu")


def collect(state: PolicyState, setup: runner.OnlineSetup, prompts: dict, rng, *, adv_cfg, timed=True,
            fused=False) -> dict:
    """One iteration's experience → {batch, rollout, shaped, metrics (+ time/*), kl_state (next), raw_score_B,
    ref_logp_BxN}. `timed`: each phase its own jit, timed (`time/<phase>`); else the scoring, log-prob, value
    and advantage phases after generation are timed together (`time/experience`), as one jit when `fused`."""
    roles, params = setup.roles, state.train.params
    chunk = minibatch_size(setup.config)
    phases = experience.Phases(True)  # generation is timed either way
    ro = phases("generate", experience.sample_phase(params["policy"], prompts["prompt_tokens_BxP"],
                                                    prompts["prompt_mask_BxP"], rng, model_cfg=roles.policy.cfg,
                                                    cfg=setup.sampling))
    cfgs = (roles.policy.cfg, roles.reward.cfg, None if roles.value_on_policy else roles.value.cfg,
            setup.sampling.temperature)
    args = (params, roles.reference.params, roles.reward.params, ro, experience.plain_prompts(prompts), state.method,
            state.reward_gain, state.reward_bias)
    kw = dict(cfgs=cfgs, chunk=chunk, adv_cfg=adv_cfg, value_on_policy=roles.value_on_policy)
    if timed:
        out = _scored_experience(*args, **kw, phases=phases)
    elif fused:
        out = phases("experience", _fused_experience(*args, **kw))
    else:  # the phases' own jits, dispatched without waiting on each
        out = phases("experience", _scored_experience(*args, **kw, phases=_UNTIMED))
    batch, shaped, metrics, next_kl, raw_score, ref_logp = out
    return {"batch": batch, "rollout": ro, "shaped": shaped, "metrics": {**metrics, **phases.times},
            "kl_state": next_kl, "raw_score_B": raw_score, "ref_logp_BxN": ref_logp}


def iterate(state, prompts, rng, *, setup, adv_cfg, loss_cfg):
    """One PPO iteration: experience, then all epochs × minibatches (the runner's `Iterate`)."""
    sample_rng, perm_rng = jax.random.split(rng)
    p = setup.config.ppo
    exp = collect(state, setup, prompts, sample_rng, adv_cfg=adv_cfg, timed=bool(p.time_phases),
                  fused=fuse_experience(p.experience_jit))
    t = time.perf_counter()
    train, upd = minibatch_update(state.train, exp["batch"], None, perm_rng, loss_fn=ppo_objective.loss_fn,
                                  config=loss_cfg, epochs=p.epochs, num_minibatches=p.num_minibatches)
    upd = jax.block_until_ready(summarise_update(upd))
    metrics = {**exp["metrics"], **upd, "time/update": time.perf_counter() - t}
    return state.replace(train=train, method=exp["kl_state"]), metrics, exp["rollout"]


def build(config, mesh):
    """(setup, fresh state, iterate) from the config: the recipe's wiring, shared with tests and benchmarks."""
    minibatch_size(config)
    kl_controller(config.kl)  # fail on a bad controller before loading models
    fuse_experience(config.ppo.experience_jit)
    setup = runner.prepare(config, mesh, with_value=True)
    roles = setup.roles
    params = {"policy": roles.policy.params, "value": roles.value.params}  # donated to the train state
    shardings = {"policy": roles.policy.shardings, "value": roles.value.shardings}
    p = config.ppo
    with parallel.activate(mesh):
        state = runner.create_state(setup, params, shardings, method_state=kl_controller(config.kl),
                                    total_steps=config.train.iterations * p.epochs * p.num_minibatches)
    step = functools.partial(iterate, setup=setup, adv_cfg=advantage_config(config, setup.tokenizer.eos_token_id),
                             loss_cfg=loss_config(config, setup))
    return setup, state, step


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `config.mesh` (all local devices, data parallel, by default) or the given mesh."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    setup, state, step = build(config, mesh)
    return runner.run_online(setup, workdir, state, step, name="ppo", chunk_size=minibatch_size(config),
                             log_keys=("reward/proxy", "reward/gold", "kl/seq_mean", "kl/beta", "ppo/clipfrac",
                                       "time/iteration"),
                             summary_extra=lambda s: {"kl_coef": float(s.method.coef)})
