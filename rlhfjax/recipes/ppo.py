"""`rlhfjax ppo`: PPO-RLHF against a frozen reward model (Ziegler et al. 2019; Bai et al. 2022).

Per iteration (each phase one jit, see `rlhfjax.rollout`): sample one response per prompt from the
current policy → RM score at the last token (normalised so initial-policy scores are N(0, 1)) →
reference log-probs → values → rewards = score − β·KL per token → GAE → whitening; then
`ppo.epochs` × `ppo.num_minibatches` optimizer steps inside ONE jit (`ppo_update`: `lax.scan` over
a permuted index array, each step the shared `rlhfjax.train.update`).

State: one `TrainState` whose params are `{"policy": LM params, "value": ScalarModel params}` (or,
with `value.model="policy_head"`, the params of a `ValueHead` on the policy's hidden states)
(one optimizer and one loss `policy + value_coef·value − entropy_coef·entropy`), inside a
`PPOState` with the KL controller, the RM normaliser and the iteration, all checkpointed together
with the prompt iterator's position, so a resumed run replays the straight one exactly. Reference
and reward params are frozen pytrees passed as arguments. Ends by exporting the policy as an HF
checkpoint in `<workdir>/model` and writing `summary.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rlhfjax import parallel
from rlhfjax import rollout as rollout_lib
from rlhfjax.data.batching import BatchIterator, Encoder, TokenizeConfig, collate_prompts
from rlhfjax.data.hh import load_prompts
from rlhfjax.models import ModelConfig, ScalarModel, Transformer, ValueHead, init_value_head
from rlhfjax.models.hf import load_pretrained, load_pretrained_scalar, load_tokenizer, save_pretrained
from rlhfjax.objectives import kl_control
from rlhfjax.objectives import ppo as ppo_math
from rlhfjax.recipes import common
from rlhfjax.train import TrainState, make_optimizer, make_schedule
from rlhfjax.train.update import update as train_update
from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.metrics import MetricsWriter, read_jsonl, write_config
from rlhfjax.train.update import check_nonfinite

TABLE_KEYS = ("kl/seq_mean", "kl/sqrt", "reward/proxy", "reward/gold")


# --------------------------------------------------------------------------------------------
# Loss and the jitted PPO update


@dataclasses.dataclass(frozen=True)
class PPOLossConfig:
    policy_model: ModelConfig
    value_model: ModelConfig | None  # None: params["value"] is a value head on the policy's hidden states
    num_response: int
    temperature: float = 1.0
    clip: float = 0.2  # ε of the clipped surrogate
    value_clip: float = 0.2  # ε of the clipped value loss
    value_coef: float = 0.1
    entropy_coef: float = 0.0
    # Rematerialise the policy/value forwards in the backward pass. Besides saving activation memory,
    # it makes the loss's forward the same XLA computation as the rollout's forward-only `logp_phase`:
    # without it, fusing the forward with the backward perturbs logits by ~1 ulp, and the first
    # minibatch's ratio is 1 only to ~5e-7 instead of exactly. Costs about one extra forward per step.
    remat: bool = True


def loss_fn(params, batch, *, frozen, config: PPOLossConfig, rng):
    """Clipped surrogate + value_coef · clipped value loss − entropy_coef · entropy, per response token.

    `params = {"policy", "value"}`; `batch` is an experience minibatch (`rollout.EXPERIENCE_KEYS`).
    `frozen` and `rng` are unused (the KL to the reference is already in the rewards).
    """
    del frozen, rng
    seq, smask, mask = batch["sequence_BxL"], batch["sequence_mask_BxL"], batch["response_mask_BxN"]
    head_on_policy = config.value_model is None

    def policy_fwd(policy, head, seq, smask):
        return rollout_lib.policy_forward(policy, seq, smask, model_cfg=config.policy_model,
                                          num_response=config.num_response, temperature=config.temperature,
                                          value_head=head)

    def value_fwd(value, seq, smask):
        return rollout_lib.response_values(value, seq, smask, model_cfg=config.value_model,
                                           num_response=config.num_response)

    if config.remat:
        policy_fwd, value_fwd = jax.checkpoint(policy_fwd), jax.checkpoint(value_fwd)
    out = policy_fwd(params["policy"], params["value"] if head_on_policy else None, seq, smask)
    logp, logits = out["logp_BxN"], out["logits_BxNxV"]
    values = out["values_BxN"] if head_on_policy else value_fwd(params["value"], seq, smask)
    pg_sum, count, pg_metrics = ppo_math.ppo_policy_loss(logp, batch["old_logp_BxN"], batch["advantages_BxN"],
                                                         mask, clip=config.clip)
    vf_sum, _, vf_metrics = ppo_math.value_loss(values, batch["old_values_BxN"], batch["returns_BxN"], mask,
                                                clip=config.value_clip)
    if config.entropy_coef == 0:
        logits = jax.lax.stop_gradient(logits)  # entropy is then only a metric
    ent_sum, ent_count = ppo_math.entropy_from_logits(logits, mask, shift=False)
    denom = jnp.maximum(count, 1.0)
    loss = (pg_sum + config.value_coef * vf_sum - config.entropy_coef * ent_sum) / denom
    metrics = {**pg_metrics, **vf_metrics, "ppo/policy_loss": pg_sum / denom, "value/loss": vf_sum / denom,
               "policy/entropy": ent_sum / jnp.maximum(ent_count, 1.0)}
    return loss, metrics


def minibatch_indices(rng, batch_size: int, epochs: int, num_minibatches: int):
    """(epochs·num_minibatches, batch_size // num_minibatches) row indices: a fresh permutation per epoch."""
    perms = jax.vmap(lambda k: jax.random.permutation(k, batch_size))(jax.random.split(rng, epochs))
    return perms.reshape(epochs * num_minibatches, batch_size // num_minibatches)


@functools.partial(jax.jit, static_argnames=("loss_config", "epochs", "num_minibatches"),
                   donate_argnames=("state",))
def ppo_update(state: TrainState, batch, rng, *, loss_config: PPOLossConfig, epochs: int, num_minibatches: int):
    """All PPO epochs × minibatches in one jit. → (state, metrics stacked over the E·M steps)."""
    B = batch["response_mask_BxN"].shape[0]
    if B % num_minibatches:
        raise ValueError(f"rollout batch {B} is not divisible by num_minibatches={num_minibatches}")
    idx = minibatch_indices(rng, B, epochs, num_minibatches)

    def step(state, idx_M):
        minibatch = jax.tree.map(lambda x: x[idx_M], batch)
        return train_update(state, minibatch, loss_fn, None, loss_config)

    return jax.lax.scan(step, state, idx)


@flax.struct.dataclass
class PPOState:
    """Everything a resumed run needs besides the prompt-iterator position (checkpointed as one pytree)."""

    train: TrainState  # params {"policy", "value"}
    kl: kl_control.FixedKL | kl_control.AdaptiveKL
    reward_gain: jax.Array  # RM normaliser: score = gain · raw + bias
    reward_bias: jax.Array
    iteration: jax.Array  # int32: PPO iterations completed


# --------------------------------------------------------------------------------------------
# Recipe


def kl_controller(kl_config):
    if kl_config.controller == "adaptive":
        return kl_control.AdaptiveKL.create(kl_config.init_coef, kl_config.target, kl_config.horizon)
    if kl_config.controller == "fixed":
        return kl_control.FixedKL.create(kl_config.init_coef)
    raise ValueError(f"kl.controller must be 'adaptive' or 'fixed', got {kl_config.controller!r}")


def _tokenizer(config):
    if config.tokenizer.path:
        return load_tokenizer(config.tokenizer.path)
    if common.is_toylab(config.data):
        common.ensure_toylab(config.data.toylab_dir, config.data.toylab_seed)
        return load_tokenizer(os.path.join(config.data.toylab_dir, "tokenizer"))
    return load_tokenizer(config.policy.init_from)


def load_models(config, vocab: int):
    """→ (policy cfg, policy params, reward cfg, reward params, value cfg, value params) (numpy/host)."""
    if not config.policy.init_from or not config.reward.init_from:
        raise ValueError("set policy.init_from (e.g. runs/toylab/sft/model) and reward.init_from "
                         "(e.g. runs/toylab/rm/model)")
    dtype = config.policy.dtype
    policy_cfg, policy_params = load_pretrained(config.policy.init_from, dtype=dtype)
    reward_cfg, reward_params = load_pretrained_scalar(config.reward.init_from, dtype=dtype)
    if config.value.model == "policy_head":
        if config.value.init_from:
            raise ValueError("value.init_from is for value.model='separate'; a policy value head starts at zero")
        value_cfg, value_params = None, init_value_head(policy_cfg)
    elif config.value.model == "separate":
        value_from = config.value.init_from or config.reward.init_from
        value_cfg, value_params = (reward_cfg, reward_params) if value_from == config.reward.init_from else \
            load_pretrained_scalar(value_from, dtype=dtype)
    else:
        raise ValueError(f"value.model must be 'separate' or 'policy_head', got {config.value.model!r}")
    for name, cfg in (("policy", policy_cfg), ("reward", reward_cfg), ("value", value_cfg or policy_cfg)):
        if cfg.vocab_size < vocab:
            raise ValueError(f"{name} model has vocab_size {cfg.vocab_size} < tokenizer size {vocab}")
    return policy_cfg, policy_params, reward_cfg, reward_params, value_cfg, value_params


def optim_config(config) -> ml_collections.ConfigDict:
    """`config.optim` with total_steps = optimizer steps of the whole run when left at 0."""
    optim = ml_collections.ConfigDict(config.optim.to_dict())
    optim.total_steps = optim.total_steps or config.train.steps * config.ppo.epochs * config.ppo.num_minibatches
    return optim


def experience_config(config, policy_cfg, reward_cfg, value_cfg, eos_id, pad_id) -> rollout_lib.ExperienceConfig:
    r = config.reward
    return rollout_lib.ExperienceConfig(
        policy_model=policy_cfg, reward_model=reward_cfg, value_model=value_cfg,
        temperature=float(config.rollout.temperature), kl_estimator=config.kl.estimator,
        gamma=float(config.ppo.gamma), lam=float(config.ppo.lam), whiten_rewards=bool(config.ppo.whiten_rewards),
        whiten_advantages=bool(config.ppo.whiten_advantages),
        score_clip=float(r.score_clip) if r.score_clip > 0 else None,
        no_eos_penalty=float(r.no_eos_penalty) if r.penalise_no_eos else None, eos_id=eos_id, pad_id=pad_id,
        chunk_size=minibatch_size(config))


def minibatch_size(config) -> int:
    B, M = config.train.batch_size, config.ppo.num_minibatches
    if M < 1 or B % M:
        raise ValueError(f"train.batch_size={B} must be a positive multiple of ppo.num_minibatches={M}")
    return B // M


def loss_config_from(config, policy_cfg, value_cfg) -> PPOLossConfig:
    return PPOLossConfig(policy_model=policy_cfg, value_model=value_cfg, num_response=config.data.max_response_len,
                         temperature=float(config.rollout.temperature), clip=float(config.ppo.clip),
                         value_clip=float(config.ppo.value_clip), value_coef=float(config.ppo.value_coef),
                         entropy_coef=float(config.ppo.entropy_coef), remat=bool(config.ppo.remat))


_OPTIMIZERS: dict = {}


def optimizer(optim: ml_collections.ConfigDict):
    """(tx, schedule), one object per distinct optim config: `tx` is a static field of TrainState, so
    an equal-but-new optimizer would make every jitted phase retrace and recompile (e.g. on resume
    in the same process)."""
    key = json.dumps(optim.to_dict(), sort_keys=True)
    if key not in _OPTIMIZERS:
        _OPTIMIZERS[key] = (make_optimizer(optim), make_schedule(optim))
    return _OPTIMIZERS[key]


def _collate(examples, encoder):
    batch = collate_prompts(examples, encoder)
    batch["prompts"] = [ex.prompt for ex in examples]
    return batch


def fit_normaliser(policy_params, reward_params, prompt_iter, mesh, *, cfg, num_response, num_batches, rng):
    """(gain, bias) making the initial policy's RM scores mean 0, std 1 (lm-human-preferences)."""
    scores = []
    for i in range(num_batches):
        host = _prompts(next(prompt_iter), mesh)
        scfg = rollout_lib.SamplingConfig(max_new_tokens=num_response, temperature=cfg.temperature,
                                          eos_id=cfg.eos_id, pad_id=cfg.pad_id)
        ro = rollout_lib.sample(policy_params, host["prompt_tokens_BxP"], host["prompt_mask_BxP"],
                                jax.random.fold_in(rng, i),
                                model_cfg=cfg.policy_model, cfg=scfg)
        scores.append(rollout_lib.score_phase(reward_params, ro.sequence_BxL, ro.sequence_mask_BxL,
                                              model_cfg=cfg.reward_model, chunk_size=cfg.chunk_size))
    return ppo_math.fit_reward_normalisation(jnp.concatenate(scores))


def decode(tokenizer, tokens_BxN, mask_BxN) -> list[str]:
    tokens, mask = np.asarray(tokens_BxN), np.asarray(mask_BxN).astype(bool)
    return [tokenizer.decode(t[m], skip_special_tokens=True).strip() for t, m in zip(tokens, mask)]


def eval_batches(config, encoder, batch_size: int):
    """Held-out prompts (`data.eval_split`, up to `data.eval_limit`) as fixed host batches; the tail
    that does not fill a batch is dropped (and reported), so shapes stay static."""
    source, data_dir = common.resolve_source(config.data, "prompts")
    try:
        examples, report = load_prompts(source, data_dir=data_dir, split=config.data.eval_split,
                                        limit=config.data.eval_limit or None)
    except (ValueError, KeyError, FileNotFoundError) as e:  # e.g. a dataset without that split
        print(f"ppo eval: no held-out prompts ({e}); evaluation off", flush=True)
        return []
    common.report_loading("ppo eval prompts", report)
    n = len(examples) // batch_size * batch_size
    if n < len(examples):
        print(f"ppo eval: using {n} of {len(examples)} prompts (whole batches of {batch_size})", flush=True)
    return [_collate(examples[i:i + batch_size], encoder) for i in range(0, n, batch_size)]


def evaluate(policy_params, reference_params, reward_params, gain, bias, batches, mesh, *, cfg, num_response,
             rng, tokenizer=None) -> dict:
    """The policy on held-out prompts, same sampling as training and fixed keys (so evals at
    different iterations differ only by the policy): normalised RM score, sequence KL to the
    reference (k1 on the samples), response length and, given the toy lab's `tokenizer`, gold reward."""
    scfg = rollout_lib.SamplingConfig(max_new_tokens=num_response, temperature=cfg.temperature, eos_id=cfg.eos_id,
                                      pad_id=cfg.pad_id)
    kw = dict(model_cfg=cfg.policy_model, num_response=num_response, temperature=cfg.temperature,
              chunk_size=cfg.chunk_size)
    proxy, kl, length, gold = [], [], [], []
    for i, host in enumerate(batches):
        prompts = _prompts(host, mesh)
        ro = rollout_lib.sample(policy_params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
                                jax.random.fold_in(rng, i), model_cfg=cfg.policy_model, cfg=scfg)
        seq, smask = ro.sequence_BxL, ro.sequence_mask_BxL
        logp = rollout_lib.logp_phase(policy_params, seq, smask, **kw)
        ref = rollout_lib.logp_phase(reference_params, seq, smask, **kw)
        score = rollout_lib.score_phase(reward_params, seq, smask, model_cfg=cfg.reward_model,
                                        chunk_size=cfg.chunk_size)
        proxy.append(np.asarray(ppo_math.normalise(score, gain, bias)))
        kl.append(np.asarray(jnp.sum(logp - ref, axis=-1)))
        length.append(np.asarray(ro.response_mask_BxN).sum(-1))
        if tokenizer is not None:
            from rlhfjax.data.toylab import gold_rewards

            gold.append(gold_rewards(host["prompts"], decode(tokenizer, ro.tokens_BxN, ro.response_mask_BxN)))
    out = {"eval/reward/proxy": float(np.mean(np.concatenate(proxy))),
           "eval/kl/seq_mean": float(np.mean(np.concatenate(kl))),
           "eval/response/length": float(np.mean(np.concatenate(length))),
           "eval/num_prompts": float(sum(len(p) for p in proxy))}
    if gold:
        out["eval/reward/gold"] = float(np.mean(np.concatenate(gold)))
    return out


def summarise_update(metrics) -> dict:
    """Per-iteration view of the stacked (E·M) update metrics: means, plus first-minibatch and max values."""
    out = {k: jnp.mean(v) for k, v in metrics.items() if k not in ("ppo/ratio_max", "ppo/ratio_min")}
    out["ppo/ratio_max"] = jnp.max(metrics["ppo/ratio_max"])
    out["ppo/ratio_min"] = jnp.min(metrics["ppo/ratio_min"])
    out["ppo/ratio_first_max"] = metrics["ppo/ratio_max"][0]
    out["ppo/ratio_first_min"] = metrics["ppo/ratio_min"][0]
    out["ppo/approx_kl_first"] = metrics["ppo/approx_kl"][0]
    out["ppo/approx_kl_last"] = metrics["ppo/approx_kl"][-1]
    return out


def summary_table(rows: list[dict], max_rows: int = 21) -> list[dict]:
    if len(rows) > max_rows:
        keep = sorted(set(np.linspace(0, len(rows) - 1, max_rows).round().astype(int).tolist()))
        rows = [rows[i] for i in keep]
    return [{"iteration": r["step"], **{k: r[k] for k in TABLE_KEYS if k in r}} for r in rows]


def model_shardings(mesh, policy_cfg, reward_cfg, value_cfg):
    """NamedShardings of policy, reward and value params from the models' logical axis names."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    args = (tokens, tokens, jnp.ones_like(tokens))
    policy = parallel.model_param_shardings(Transformer(policy_cfg), args, mesh)
    reward = parallel.model_param_shardings(ScalarModel(reward_cfg), args, mesh)
    if value_cfg is None:
        value = parallel.model_param_shardings(ValueHead(policy_cfg.weights_dtype),
                                               (jnp.zeros((1, 1, policy_cfg.hidden_size)),), mesh)
    else:
        value = parallel.model_param_shardings(ScalarModel(value_cfg), args, mesh)
    return policy, reward, value


def _place(tree, shardings):
    # np.array copies: on CPU device_put may alias host memory, and no two placed trees may share it.
    return jax.tree.map(lambda x, s: jax.device_put(np.array(x), s), tree, shardings)


def _prompts(host, mesh):
    return parallel.shard_batch({k: host[k] for k in ("prompt_tokens_BxP", "prompt_mask_BxP")}, mesh)


def run(config, workdir: str) -> dict:
    """Train on `config.mesh` (all local devices, data parallel, by default)."""
    return _run(config, workdir, parallel.make_mesh(config.mesh))


def _run(config, workdir: str, mesh, return_state: bool = False):
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    tokenizer = _tokenizer(config)
    encoder = Encoder(tokenizer, TokenizeConfig(max_prompt_len=config.data.max_prompt_len,
                                                max_response_len=config.data.max_response_len,
                                                template=config.data.template))
    source, data_dir = common.resolve_source(config.data, "prompts")
    examples, report = load_prompts(source, data_dir=data_dir, split=config.data.train_split,
                                    limit=config.data.limit or None)
    common.report_loading("ppo prompts", report)
    B, N = config.train.batch_size, config.data.max_response_len
    collate = functools.partial(_collate, encoder=encoder)
    prompt_iter = BatchIterator(examples, B, collate, seed=config.seed, num_epochs=None)

    policy_cfg, policy_np, reward_cfg, reward_np, value_cfg, value_np = load_models(config, len(tokenizer))
    policy_sh, reward_sh, value_sh = model_shardings(mesh, policy_cfg, reward_cfg, value_cfg)
    with parallel.activate(mesh):  # the models' logical constraints resolve against this mesh
        # Frozen reference and reward models are laid out like the trained ones (fresh buffers each:
        # the train state is donated, so it must never alias them).
        reference_params, reward_params = _place(policy_np, policy_sh), _place(reward_np, reward_sh)
        exp_cfg = experience_config(config, policy_cfg, reward_cfg, value_cfg, tokenizer.eos_token_id, encoder.pad_id)
        loss_config = loss_config_from(config, policy_cfg, value_cfg)

        optim = optim_config(config)
        base_rng = jax.random.PRNGKey(config.seed)
        tx, schedule = optimizer(optim)
        params = {"policy": _place(policy_np, policy_sh), "value": _place(value_np, value_sh)}
        train_state = TrainState.create(params, tx, jax.random.fold_in(base_rng, 1), schedule=schedule)
        opt_sh = parallel.opt_state_shardings(tx, params, {"policy": policy_sh, "value": value_sh}, mesh)
        train_state = train_state.replace(opt_state=parallel.shard_like(train_state.opt_state, opt_sh))
        state = PPOState(train=train_state, kl=kl_controller(config.kl), reward_gain=jnp.ones((), jnp.float32),
                         reward_bias=jnp.zeros((), jnp.float32), iteration=jnp.zeros((), jnp.int32))

        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints)
        resumed = checkpointer.latest_step()
        if resumed is not None:
            state, data_state, _, _ = checkpointer.restore(state)
            prompt_iter.load_state_dict(data_state)
            print(f"resumed from iteration {resumed}", flush=True)
        elif config.reward.normalise:
            norm_iter = BatchIterator(examples, B, collate, seed=config.seed + 1, num_epochs=None)
            gain, bias = fit_normaliser(reference_params, reward_params, norm_iter, mesh, cfg=exp_cfg, num_response=N,
                                        num_batches=config.reward.norm_batches, rng=jax.random.fold_in(base_rng, 2))
            state = state.replace(reward_gain=gain, reward_bias=bias)
            print(f"reward normaliser: gain {float(gain):.4g} bias {float(bias):.4g}", flush=True)

        config_dict = config.to_dict()
        write_config(workdir, config_dict)
        writer = MetricsWriter(workdir, resume_step=resumed)
        toylab = common.is_toylab(config.data)
        if toylab:
            from rlhfjax.data.toylab import gold_rewards
        iterations = config.train.steps
        start = int(state.iteration)
        evals = eval_batches(config, encoder, B) if config.train.eval_every else []
        eval_rng = jax.random.fold_in(base_rng, 3)

        def run_eval(step):
            e = evaluate(state.train.params["policy"], reference_params, reward_params, state.reward_gain,
                         state.reward_bias, evals, mesh, cfg=exp_cfg, num_response=N, rng=eval_rng,
                         tokenizer=tokenizer if toylab else None)
            row = writer.write(step, e)
            print(f"[ppo eval after {step} iterations] " + " ".join(f"{k[5:]}={v:.4g}" for k, v in row.items()
                                                                    if k.startswith("eval/")), flush=True)
            return row

        try:
            if evals and start == 0:
                run_eval(0)  # the initial (SFT) policy: the baseline every later eval is compared with
            for it in range(start + 1, iterations + 1):
                t_iter = time.perf_counter()
                host = next(prompt_iter)
                prompts = _prompts(host, mesh)
                sample_rng, perm_rng = jax.random.split(jax.random.fold_in(base_rng, 1000 + it))
                exp = rollout_lib.collect(
                    state.train.params["policy"], state.train.params["value"], reference_params=reference_params,
                    reward_params=reward_params, prompt_BxP=prompts["prompt_tokens_BxP"],
                    prompt_mask_BxP=prompts["prompt_mask_BxP"], rng=sample_rng, kl_state=state.kl,
                    gain=state.reward_gain, bias=state.reward_bias, cfg=exp_cfg, num_response=N)
                t = time.perf_counter()
                train_state, upd = ppo_update(state.train, exp["batch"], perm_rng, loss_config=loss_config,
                                              epochs=config.ppo.epochs, num_minibatches=config.ppo.num_minibatches)
                upd = jax.block_until_ready(summarise_update(upd))
                metrics = {**exp["metrics"], **upd, "time/update": time.perf_counter() - t}
                state = state.replace(train=train_state, kl=exp["kl_state"], iteration=jnp.asarray(it, jnp.int32))
                if toylab:
                    t = time.perf_counter()
                    ro = exp["rollout"]
                    responses = decode(tokenizer, ro.tokens_BxN, ro.response_mask_BxN)
                    metrics["reward/gold"] = float(np.mean(gold_rewards(host["prompts"], responses)))
                    metrics["time/gold"] = time.perf_counter() - t
                elapsed = time.perf_counter() - t_iter
                metrics["time/iteration"] = elapsed
                metrics["perf/tokens_per_s"] = float(jnp.sum(exp["rollout"].response_mask_BxN)) / elapsed
                last = it == iterations
                if it % config.train.log_every == 0 or last or it == start + 1:
                    row = writer.write(it, metrics)
                    print(f"[ppo {it}/{iterations}] " + " ".join(
                        f"{k}={row[k]:.4g}" for k in ("reward/proxy", "reward/gold", "kl/seq_mean", "kl/beta",
                                                      "ppo/clipfrac", "time/iteration") if k in row), flush=True)
                check_nonfinite(state.train, config.optim.max_consecutive_nonfinite)
                if evals and (it % config.train.eval_every == 0 or last):
                    run_eval(it)
                if (config.train.save_every and it % config.train.save_every == 0) or last:
                    checkpointer.save(it, state, prompt_iter.state_dict(), config_dict)
        finally:
            writer.close()
            checkpointer.close()

        model_dir = os.path.join(workdir, "model")
        export_cfg = policy_cfg.replace(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=encoder.pad_id)
        save_pretrained(export_cfg, state.train.params["policy"], model_dir, tokenizer=tokenizer)
        rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        train_rows = [r for r in rows if "reward/proxy" in r]
        eval_rows = [r for r in rows if "eval/reward/proxy" in r]
        summary = {"iterations": iterations, "final": train_rows[-1] if train_rows else {},
                   "table": summary_table(train_rows), "evals": eval_rows,
                   "reward_normaliser": {"gain": float(state.reward_gain), "bias": float(state.reward_bias)},
                   "kl_coef": float(state.kl.coef), "seconds": round(time.time() - t0, 1), "model_dir": model_dir}
        common.write_json(os.path.join(workdir, "summary.json"), summary)
        return (summary, state) if return_state else summary
