"""The one online loop: prompts → a method's iteration → metrics → held-out evals → checkpoints
(exact resume) → HF export of the policy → reward-vs-√KL plot → summary. PPO, and every sample-N
method (SuperHF, best-of-n, RLOO/GRPO), differ only in the iteration function they pass.

    setup = prepare(config, mesh, with_value=...)          # tokenizer, roles on the mesh, sampling
    state = create_state(setup, {"policy": ..., ...}, shardings, method_state=...)
    summary, state = run_online(setup, workdir, state, iterate, name="ppo")

`iterate(state, prompts, rng) -> (state, metrics, rollout)` gets a `harness.state.PolicyState`, one prompt batch
on the mesh (`prompt_tokens_BxP`, `prompt_mask_BxP`; with a prompt context also `plain_prompt_*`, see
`harness.experience`) and this iteration's key; it returns the new
state, its metrics (jnp scalars) and the rollout it trained on (B·N rows when it sampled N per
prompt, grouped by prompt), on which the runner computes the toy lab's gold reward.

Config read here: data.* (prompts: train split for training, eval split for evals), tokenizer.path,
prompt.context_file (a fixed text the policy sees before every prompt, in training and evals),
policy/reward/value (roles), rollout.temperature, reward.normalise / norm_batches, train.iterations
/ batch_size (prompts per iteration) / eval_batch_size (eval and normaliser batches) / log_every /
eval_every / save_every / keep_checkpoints,
optim.*, seed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rlhfjax import distributed, parallel
from rlhfjax.analysis import report as kl_report
from rlhfjax.analysis.similarity import meteor_mode
from rlhfjax.data.batching import BatchIterator, Encoder, collate_prompt_response
from rlhfjax.data.hh import load_prompts
from rlhfjax.data.sources import is_toylab, resolve_source
from rlhfjax.data.tokenizing import decode_rows, encoder_for, tokenizer_for
from rlhfjax.harness import evaluation, experience
from rlhfjax.harness.roles import Roles, export_policy, load_roles
from rlhfjax.harness.state import PolicyState, create as create_policy_state
from rlhfjax.objectives.core import has_eos, sequence_kl
from rlhfjax.sampling import SamplingConfig
from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.loop import Checkpoint, Evaluate, Log, StopAt, run_loop
from rlhfjax.train.metrics import read_jsonl, write_json

TABLE_KEYS = ("kl/seq_mean", "kl/sqrt", "reward/proxy", "reward/gold")


@dataclasses.dataclass
class OnlineSetup:
    config: ml_collections.ConfigDict
    mesh: Any
    roles: Roles
    tokenizer: Any
    encoder: Encoder
    sampling: SamplingConfig  # how rollouts (and evals) sample: temperature, EOS, fixed length
    gold_fn: Callable | None  # toy lab: gold_rewards(prompts, responses); else None
    gold_metrics_fn: Callable | None = None  # toy lab: behaviour_metrics (gold components, refusals) at evals
    rollout_encoder: Encoder | None = None  # training prompts, when not `encoder` (evals): context distillation

    @property
    def num_response(self) -> int:
        return self.sampling.max_new_tokens


def prepare(config, mesh, *, with_value: bool, reward_optional: bool = False) -> OnlineSetup:
    """Tokenizer, encoder, roles placed on `mesh` and the rollout sampling config (batch sizes checked
    against the mesh first: a clear error, not a sharding failure minutes in). `reward_optional`: a
    method that trains without a reward model gets none when `reward.init_from` is empty (evals then
    report no proxy reward)."""
    parallel.check_batch_size(config.train.batch_size, mesh)
    parallel.check_batch_size(config.train.eval_batch_size, mesh, what="train.eval_batch_size")
    tokenizer = tokenizer_for(config, config.policy.init_from)
    encoder = encoder_for(config, tokenizer)
    roles = load_roles(config, mesh, len(tokenizer), with_value=with_value, reward_optional=reward_optional)
    sampling = SamplingConfig(max_new_tokens=config.data.max_response_len,
                              temperature=float(config.rollout.temperature), top_p=float(config.rollout.top_p),
                              eos_id=tokenizer.eos_token_id, pad_id=encoder.pad_id)
    gold_fn = gold_metrics_fn = None
    if is_toylab(config.data):
        from rlhfjax.data.toylab import behaviour_metrics as gold_metrics_fn, gold_rewards as gold_fn
    return OnlineSetup(config, mesh, roles, tokenizer, encoder, sampling, gold_fn, gold_metrics_fn)


def create_state(setup: OnlineSetup, params: dict, shardings: dict, *, total_steps: int, method_state: Any = ()):
    """A fresh `PolicyState` (`harness.state.create`) with trainable `params` (placed, sharded like `shardings`,
    donated), its schedule over `total_steps` optimizer steps when `optim.total_steps` is 0."""
    config = setup.config
    return create_policy_state(config, setup.mesh, params, shardings, total_steps=total_steps,
                               rng=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), method_state=method_state)


def sample_n_metrics(setup, state, ro, score_R, keep, S: int, kl_R=None) -> dict:
    """Reward, length and KL metrics of a grouped rollout (S rows per prompt) and its kept rows
    (SuperHF, RLOO, GRPO). KL on each prompt's first row, a plain policy sample:
    from `kl_R` (Σ_t k1 per row) when the caller has it, else two teacher-forced passes on those rows."""
    mask, kept_mask = ro.response_mask_BxN, ro.response_mask_BxN[keep]
    first = slice(None, None, S)
    if kl_R is None:
        kw = dict(model_cfg=setup.roles.policy.cfg, num_response=setup.num_response,
                  temperature=setup.sampling.temperature)
        seq, smask = ro.sequence_BxL[first], ro.sequence_mask_BxL[first]
        logp = experience.logp_phase(state.train.params["policy"], seq, smask, **kw)
        ref = experience.logp_phase(setup.roles.reference.params, seq, smask, **kw)
        kl_B = sequence_kl(logp, ref, mask[first], "k1")
    else:
        kl_B = kl_R[first]
    return {"reward/proxy": jnp.mean(score_R), "reward/proxy_kept": jnp.mean(score_R[keep]),
            "reward/proxy_std": jnp.std(score_R), "kl/seq_mean": jnp.mean(kl_B),
            "kl/sqrt": jnp.sqrt(jnp.maximum(jnp.mean(kl_B), 0.0)),
            "response/length": jnp.mean(mask.sum(-1).astype(jnp.float32)),
            "response/length_kept": jnp.mean(kept_mask.sum(-1).astype(jnp.float32)),
            "response/eos_frac": jnp.mean(has_eos(ro.tokens_BxN, mask, setup.sampling.eos_id).astype(jnp.float32))}


def summary_table(rows: list[dict], max_rows: int = 21) -> list[dict]:
    if len(rows) > max_rows:
        keep = sorted(set(np.linspace(0, len(rows) - 1, max_rows).round().astype(int).tolist()))
        rows = [rows[i] for i in keep]
    return [{"iteration": r["step"], **{k: r[k] for k in TABLE_KEYS if k in r}} for r in rows]


def evaluator(setup: OnlineSetup, workdir: str, *, chunk_size: int | None = None, name: str = "eval",
              roles: Roles | None = None, encoder: Encoder | None = None) -> evaluation.Evaluator:
    """The run's `harness.evaluation.Evaluator`: held-out prompts of `data.eval_split` (up to `data.eval_limit`)
    in batches of `train.eval_batch_size` (none with `train.eval_every` 0), sampled as the rollouts are, KL with
    the method's estimator (`kl.estimator`, else k1); `roles` / `encoder` other than the setup's (distillation's
    prompted teacher)."""
    config = setup.config
    source, data_dir = resolve_source(config.data, "prompts")
    encoder = encoder or setup.encoder
    batches = []
    if config.train.eval_every:
        batches = evaluation.eval_batches(source, data_dir, config.data.eval_split, config.data.eval_limit, encoder,
                                          config.train.eval_batch_size, name=name)
    return evaluation.Evaluator(
        roles or setup.roles, setup.mesh, setup.sampling, setup.tokenizer, encoder, config.train.eval_batch_size,
        config.seed, batches, kl_estimator=config.kl.estimator if "kl" in config else "k1", chunk_size=chunk_size,
        gold_fn=setup.gold_fn, gold_metrics_fn=setup.gold_metrics_fn,
        samples_path=os.path.join(workdir, "samples.jsonl"))


Iterate = Callable[[PolicyState, dict, jax.Array], tuple[PolicyState, dict, Any]]


def run_online(setup: OnlineSetup, workdir: str, state: PolicyState, iterate: Iterate, *, name: str,
               chunk_size: int | None = None, log_keys=("reward/proxy", "reward/gold", "kl/seq_mean"),
               summary_extra: Callable[[PolicyState], dict] | None = None,
               examples: list | None = None) -> tuple[dict, PolicyState]:
    """Train `config.train.iterations` iterations of `iterate` (module docstring) and export. `examples`:
    training rows other than the prompts of `data.*` (demonstrations: each batch then also carries their
    responses, `data.batching.collate_prompt_response`)."""
    t0 = time.time()
    config, mesh, roles = setup.config, setup.mesh, setup.roles
    os.makedirs(workdir, exist_ok=True)
    source, data_dir = resolve_source(config.data, "prompts")
    with_responses = examples is not None
    if not with_responses:
        examples, report = load_prompts(source, data_dir=data_dir, split=config.data.train_split,
                                        limit=config.data.limit or None)
        print(f"{name} prompts: {report.summary()}", flush=True)
    B = config.train.batch_size

    def collate(examples):
        encoder = setup.rollout_encoder or setup.encoder
        if with_responses:
            return {**collate_prompt_response(examples, encoder), "prompts": [ex.prompt for ex in examples]}
        return evaluation.collate(examples, encoder)

    prompt_iter = BatchIterator(examples, B, collate, seed=config.seed, num_epochs=None)
    base_rng = jax.random.PRNGKey(config.seed)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints)
    with parallel.activate(mesh):  # the models' logical constraints resolve against this mesh
        judge = evaluator(setup, workdir, chunk_size=chunk_size, name=f"{name} eval")
        if judge.batches:
            print(f"{name} eval: METEOR similarity runs {meteor_mode()}", flush=True)
        if checkpointer.latest_step() is None:  # fitted on the initial policy once; a resumed run has it
            state = judge.normalise(state, state.train.params["policy"], examples, config.reward.norm_batches,
                                    enabled=config.reward.normalise)

        def step_fn(state: PolicyState, it: int):
            t_iter = time.perf_counter()
            host = next(prompt_iter)
            prompts = parallel.shard_batch(experience.prompt_arrays(host), mesh,
                                           process_rows=True)  # this process's rows of the global batch
            state, metrics, rollout = iterate(state, prompts, jax.random.fold_in(base_rng, 1000 + it))
            state = state.replace(iteration=jnp.asarray(it, jnp.int32))
            metrics = dict(metrics)
            if setup.gold_fn is not None:
                t = time.perf_counter()
                # Each process scores the rows of its own prompts (rows are grouped by prompt).
                tokens, mask = parallel.local_rows(rollout.tokens_BxN), parallel.local_rows(rollout.response_mask_BxN)
                per_prompt = len(tokens) // len(host["prompts"])
                prompts = [p for p in host["prompts"] for _ in range(per_prompt)]
                gold = setup.gold_fn(prompts, decode_rows(setup.tokenizer, tokens, mask))
                metrics["reward/gold"] = float(np.mean(distributed.gather_rows(gold)))
                metrics["time/gold"] = time.perf_counter() - t
            elapsed = time.perf_counter() - t_iter
            metrics["time/iteration"] = elapsed
            metrics["perf/tokens_per_s"] = float(jnp.sum(rollout.response_mask_BxN)) / elapsed
            return state, metrics

        def eval_fn(state: PolicyState) -> dict:
            return judge(state.train.params["policy"], state.reward_gain, state.reward_bias, int(state.iteration))

        iterations = config.train.iterations
        hooks = [StopAt(config.train.stop_at),
                 *([Evaluate(eval_fn, config.train.eval_every, at_start=True)] if judge.batches else []),
                 Log(workdir, config.train.log_every, config=config.to_dict(), keys=log_keys, name=name),
                 Checkpoint(checkpointer, prompt_iter, config.train.save_every, config=config.to_dict())]
        try:
            state = run_loop(state, step_fn, num_steps=iterations, hooks=hooks, step_of=lambda s: s.iteration,
                             train_state_of=lambda s: s.train,
                             max_consecutive_nonfinite=config.optim.max_consecutive_nonfinite, name=name)
        finally:
            checkpointer.close()

    model_dir = export_policy(roles.policy.cfg, state.train.params["policy"], workdir, setup.tokenizer,
                              setup.encoder.pad_id)
    # The reward-vs-√KL plot belongs to the run directory, not only to a later report; a run too short to
    # have a curve still finishes.
    plot, why_not = kl_report.plot_run(workdir) if distributed.is_primary() else (None, "not process 0")
    distributed.barrier("metrics written")  # every process reads process 0's metrics.jsonl below
    print(f"{name}: reward vs √KL plot: {plot}" if plot else f"{name}: no reward vs √KL plot: {why_not}", flush=True)
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train_rows = [r for r in rows if "time/iteration" in r]
    summary = {"iterations": iterations, "final": train_rows[-1] if train_rows else {},
               "table": summary_table(train_rows), "evals": [r for r in rows if "eval/kl/seq_mean" in r],
               "reward_normaliser": {"gain": float(state.reward_gain), "bias": float(state.reward_bias)},
               "seconds": round(time.time() - t0, 1), "model_dir": model_dir, "kl_estimator": judge.kl_estimator,
               "plot": plot, "meteor": meteor_mode(), **(summary_extra(state) if summary_extra else {})}
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary, state
