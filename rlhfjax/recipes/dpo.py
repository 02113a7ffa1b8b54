"""`rlhfjax dpo`: direct preference optimisation (DPO, IPO, conservative DPO) of an SFT policy on comparisons.

The loss is `objectives.dpo.loss_fn` (`dpo.loss` = dpo | ipo | cdpo) on the shared offline loop
(`recipes.common.fit`: config.mesh, exact gradient accumulation, resume, evals, checkpoints).

Data: any comparisons the `rm` recipe reads: the toy lab's annotator pools (`data.data_dir`), HH-RLHF
from the hub or local files, or ranked lists (`data.ranked_lists`; every pair i < j of a list best →
worst is a comparison). Pairs that cannot teach anything after tokenization — a response with no
token left, or chosen and rejected identical once truncated — are skipped, counted by reason and
reported (`summary.json["skipped"]`), never a crash.

Reference: the policy starts from `policy.init_from` (an SFT checkpoint) and the same weights are the
frozen reference π_ref. Both, and the optional RM, load through `online.roles.load_roles`, as the online
methods' roles do, so `policy.scan_layers`, `policy.remat_policy` and `policy.logits_chunk` apply to them.
By default the reference's summed response log-probs are computed ONCE, before training, in one jitted pass
over the train and eval pairs, and stored in `<workdir>/reference_logps.npz`
(written atomically) under a fingerprint of the tokenized pairs and of the reference weights: a
resumed run reuses the column, a changed dataset, tokenizer, length limit or checkpoint recomputes
it. Batches carry their pairs' entries by example index, so shuffling and resuming keep rows
aligned, and the reference params are not on the device while training: they are placed only for
the held-out sampling evals (KL). `dpo.reference_on_the_fly=True` instead keeps the reference on the
device and passes it to the loss as `frozen` (one more forward per step, no column).

Every `train.eval_every` steps, the last step, and (fresh runs, `eval.at_start`) step 0 = the SFT policy:
- on the eval pairs: `eval/dpo/{loss,accuracy,margin,reward_chosen,reward_rejected,logp_drift_chosen,
  logp_drift_rejected,logp_chosen,logp_rejected}` (see objectives/dpo.py), and on the toy lab
  `eval/dpo/gold_agreement` (implicit reward margin vs the gold reward's preference);
- by sampling held-out prompts with the shared online evaluation (`online.evaluation.evaluate`, the one
  PPO uses, same temperature by default): `eval/kl/seq_mean` to the reference, `eval/reward/gold` (toy
  lab), `eval/reward/proxy` when `reward.init_from` names an RM (normalised like PPO's: mean 0, std 1
  under the initial policy on training prompts; the normaliser is stored in `reward_normaliser.npz`),
  response length and the similarity/diversity metrics it reports; samples go to `samples.jsonl`.
So a DPO run lands on the same reward vs √KL axes as the online methods.
Training records log the same `dpo/*` metrics on each batch. The run ends by exporting the policy as an
HF checkpoint (`model/`) and writing `summary.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time

import jax
import ml_collections
import numpy as np

from rlhfjax import distributed, parallel
from rlhfjax.data import tokenizing
from rlhfjax.data.batching import BatchIterator, collate_pairs, padded_batches
from rlhfjax.errors import ConfigError
from rlhfjax.models import api
from rlhfjax.models.hf import save_pretrained
from rlhfjax.objectives import dpo as dpo_objective
from rlhfjax.objectives.ppo import KL_ESTIMATORS
from rlhfjax.online import evaluation
from rlhfjax.online.roles import Role, Roles, load_roles
from rlhfjax.recipes import common
from rlhfjax.sampling import SamplingConfig
from rlhfjax.train.metrics import read_jsonl
from rlhfjax.train.run_cache import computed_once

REFERENCE_FILE = "reference_logps.npz"
NORMALISER_FILE = "reward_normaliser.npz"
# Skip reasons of pairs dropped after tokenization (counted, reported, in summary.json).
EMPTY_RESPONSE = "empty_response_after_truncation"
IDENTICAL = "identical_after_truncation"


# --------------------------------------------------------------------------------------------
# Data: which pairs can teach anything (they come from `common.load_comparisons`, as the rm recipe's do)


def usable_pairs(pairs: list, encoder) -> tuple[list, dict, str]:
    """(pairs that can train, {skip reason: count}, sha256 of their token ids): a pair is dropped when a
    response has no token after truncation or both responses tokenize to the same ids."""
    kept, skipped, digest = [], {}, hashlib.sha256()
    for pair in pairs:
        prompt = encoder.prompt_ids(pair.prompt)
        chosen, rejected = encoder.response_ids(pair.chosen), encoder.response_ids(pair.rejected)
        reason = EMPTY_RESPONSE if not chosen or not rejected else IDENTICAL if chosen == rejected else None
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        kept.append(pair)
        for ids in (prompt, chosen, rejected):
            digest.update(np.asarray(ids, np.int64).tobytes() + b"|")
    return kept, skipped, digest.hexdigest()


def _report_skips(name: str, skipped: dict, kept: int) -> None:
    if skipped:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))
        print(f"{name}: skipped {sum(skipped.values())} pairs after tokenization ({reasons}); {kept} left", flush=True)
    if not kept:
        raise ConfigError(f"{name}: no usable pairs", "check data.source / data.data_dir and the length limits")


def collate_with_reference(items, *, pairs, encoder, column=None) -> dict:
    """`collate_pairs` of the pairs at indices `items` (None: a padding row), plus their precomputed
    reference log-probs (`objectives.dpo.REF_KEYS`) looked up by index when `column` is given."""
    batch = collate_pairs([None if i is None else pairs[i] for i in items], encoder)
    if column is not None:
        idx = np.array([-1 if i is None else i for i in items])
        for key, values in zip(dpo_objective.REF_KEYS, column):
            batch[key] = np.where(idx >= 0, values[np.maximum(idx, 0)], 0.0).astype(np.float32)
    return batch


# --------------------------------------------------------------------------------------------
# The reference column: once per dataset, stored with the run


def params_fingerprint(cfg, host_params) -> str:
    """A content checksum of a checkpoint (architecture + per-leaf shape, sum, sum of squares)."""
    digest = hashlib.sha256(repr(cfg).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(host_params):
        x = np.asarray(leaf, np.float64)
        digest.update(f"{jax.tree_util.keystr(path)}{x.shape}{x.sum():.17g}{np.square(x).sum():.17g}".encode())
    return digest.hexdigest()


_reference_logps = jax.jit(dpo_objective.reference_logps, static_argnames="model_cfg")


def compute_reference_column(ref_params, cfg, pairs: list, encoder, batch_size: int, mesh):
    """(chosen_B, rejected_B) float32 over `pairs` in order: one jitted function over fixed-size batches
    (a compile per length bucket), on the mesh."""
    chosen, rejected = [], []
    for _, idx, n in padded_batches(range(len(pairs)), batch_size):
        batch = collate_with_reference(idx, pairs=pairs, encoder=encoder)
        c, r = _reference_logps(ref_params, common.shard(batch, mesh), model_cfg=cfg)
        chosen.append(np.asarray(c)[:n])
        rejected.append(np.asarray(r)[:n])
    return np.concatenate(chosen).astype(np.float32), np.concatenate(rejected).astype(np.float32)


def reference_columns(path: str, fingerprint: str, compute) -> tuple[dict, dict]:
    """The stored columns at `path` if their fingerprint (dataset + reference weights) matches, else `compute()`
    → {name: array}, stored there (`train.run_cache.computed_once`). Returns (columns, info for the summary)."""
    return computed_once(path, fingerprint, compute, what="reference log-probs")


# --------------------------------------------------------------------------------------------
# Settings


def _check_config(config, mesh) -> dpo_objective.DPOLossConfig:
    """The settings that can be wrong, before anything loads."""
    loss_config = dpo_objective.DPOLossConfig(
        model=None, loss=config.dpo.loss, beta=float(config.dpo.beta),
        label_smoothing=float(config.dpo.label_smoothing), reference_on_the_fly=bool(config.dpo.reference_on_the_fly))
    if config.eval.kl_estimator not in KL_ESTIMATORS:
        raise ConfigError(f"eval.kl_estimator={config.eval.kl_estimator!r} is not one of the choices",
                          f"use one of: {', '.join(KL_ESTIMATORS)}")
    common.check_batch_size(config.train.batch_size, mesh, config.optim.grad_accum_steps)
    if config.eval.prompt_limit:
        common.check_batch_size(config.eval.batch_size, mesh, what="eval.batch_size")
    if config.dpo.reference_batch_size:
        common.check_batch_size(config.dpo.reference_batch_size, mesh, what="dpo.reference_batch_size")
    return loss_config


# --------------------------------------------------------------------------------------------
# The run


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    """`run`, also returning the final TrainState (params still on the mesh)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = common.mesh_for(config, mesh)
    loss_config = _check_config(config, mesh)
    on_the_fly = loss_config.reference_on_the_fly
    B = config.train.batch_size
    tokenizer = tokenizing.tokenizer_for(config, config.policy.init_from)
    encoder = common.encoder_for(config, tokenizer)
    toylab = common.is_toylab(config.data)

    train_pairs, skipped_train, train_digest = usable_pairs(
        common.load_comparisons(config, config.data.train_split, config.data.limit, "dpo train"), encoder)
    _report_skips("dpo train", skipped_train, len(train_pairs))
    eval_pairs, skipped_eval, eval_digest = usable_pairs(
        common.load_comparisons(config, config.data.eval_split, config.data.eval_limit, "dpo eval"), encoder)
    _report_skips("dpo eval", skipped_eval, len(eval_pairs))
    if len(train_pairs) < B:
        raise ConfigError(f"{len(train_pairs)} usable train pairs, fewer than train.batch_size={B}",
                          "use a smaller train.batch_size or more data (data.limit)")

    # Policy and reference from policy.init_from (a random `model` preset for smoke runs); the reference's
    # weights stay on the host: the state takes the policy's, and the reference column needs none on the device.
    roles = load_roles(config, mesh, len(tokenizer), with_value=False, reward_optional=True, reference_on_host=True)
    policy_cfg, shardings, reward = roles.policy.cfg, roles.policy.shardings, roles.reward
    host = roles.reference.params
    loss_config = dataclasses.replace(loss_config, model=policy_cfg)
    params = roles.policy.params  # the initial policy, = the reference until the first update
    reference = api.place(host, shardings) if on_the_fly else None  # fresh buffers: never aliases the state

    with parallel.activate(mesh):
        # The reference column, once per dataset; computed with the initial policy's params (= the reference).
        column, reference_info = {}, {"mode": "on_the_fly" if on_the_fly else "precomputed"}
        weights = params_fingerprint(policy_cfg, host)
        if not on_the_fly:
            fingerprint = hashlib.sha256(f"{train_digest}\n{eval_digest}\n{weights}".encode()).hexdigest()

            def compute():  # train and eval pairs each in order, in batches like the eval's
                out = {}
                for name, pairs in (("train", train_pairs), ("eval", eval_pairs)):
                    out[f"{name}_chosen"], out[f"{name}_rejected"] = compute_reference_column(
                        params, policy_cfg, pairs, encoder, config.dpo.reference_batch_size or B, mesh)
                return out

            column, info = reference_columns(os.path.join(workdir, REFERENCE_FILE), fingerprint, compute)
            reference_info.update(info)

        # Held-out sampling evaluation, as the online methods do it.
        sampling = SamplingConfig(max_new_tokens=config.eval.max_new_tokens, temperature=float(config.eval.temperature),
                                  top_p=float(config.eval.top_p), eos_id=tokenizer.eos_token_id, pad_id=encoder.pad_id)
        gold_fn = gold_metrics_fn = None
        if toylab:
            from rlhfjax.data.toylab import behaviour_metrics as gold_metrics_fn, gold_rewards as gold_fn
        prompt_data = ml_collections.ConfigDict(config.data.to_dict())
        if toylab:
            prompt_data.data_dir = ""  # the toy lab's prompts have no annotator pools
        prompt_source, prompt_dir = common.resolve_source(prompt_data, "prompts")
        prompt_batches = []
        if config.eval.prompt_limit:
            prompt_batches = evaluation.eval_batches(prompt_source, prompt_dir, config.data.eval_split,
                                                     config.eval.prompt_limit, encoder, config.eval.batch_size,
                                                     name="dpo eval")
        gain, bias, normaliser = _reward_normaliser(config, workdir, params, policy_cfg, weights, reward,
                                                    prompt_source, prompt_dir, encoder, sampling, mesh)

    train_refs = None if on_the_fly else (column["train_chosen"], column["train_rejected"])
    eval_refs = None if on_the_fly else (column["eval_chosen"], column["eval_rejected"])
    train_iter = BatchIterator(list(range(len(train_pairs))), B,
                               functools.partial(collate_with_reference, pairs=train_pairs, encoder=encoder,
                                                 column=train_refs), seed=config.seed, num_epochs=None)
    eval_pair_batches = [collate_with_reference(idx, pairs=eval_pairs, encoder=encoder, column=eval_refs)
                         for _, idx, _ in padded_batches(range(len(eval_pairs)), B)]
    gold_margin = None
    if toylab:
        prompts = [p.prompt for p in eval_pairs]
        gold_margin = (gold_fn(prompts, [p.chosen for p in eval_pairs])
                       - gold_fn(prompts, [p.rejected for p in eval_pairs]))

    # `params` are donated to the state here: from now on the policy is `state.params`.
    state = common.create_state(params, shardings, config, jax.random.PRNGKey(config.seed), mesh)
    policy_role = dataclasses.replace(roles.policy, params=None)  # the trained params are the state's
    eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 3)

    def evaluate(state) -> dict:  # under the mesh (the loop runs it inside `fit`'s activation)
        parts = [jax.device_get(_eval_terms(state.params, common.shard(b, mesh), reference, loss_config))
                 for b in eval_pair_batches]
        terms = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        loss_B = np.concatenate([p[1] for p in parts])
        metrics = {k: float(v) for k, v in
                   dpo_objective.pair_metrics(terms, loss_B, loss_config, prefix="eval/dpo/").items()}
        if gold_margin is not None:
            valid = terms["valid_B"][:len(eval_pairs)] > 0
            margin, gold = terms["delta_B"][:len(eval_pairs)][valid], gold_margin[valid]
            decided = gold != 0
            agree = (np.sign(margin[decided]) == np.sign(gold[decided])) + 0.5 * (margin[decided] == 0)
            metrics["eval/dpo/gold_agreement"] = float(agree.mean()) if decided.any() else float("nan")
        if prompt_batches:
            ref = reference if on_the_fly else api.place(host, shardings)  # on the device for this eval only
            eval_roles = Roles(policy=policy_role, reference=dataclasses.replace(roles.reference, params=ref),
                               reward=reward)
            metrics.update(evaluation.evaluate(
                state.params, eval_roles, gain, bias, prompt_batches, mesh, sampling=sampling, rng=eval_rng,
                tokenizer=tokenizer, gold_fn=gold_fn, chunk_size=config.eval.chunk_size or None,
                samples_path=os.path.join(workdir, "samples.jsonl"), step=int(state.step),
                kl_estimator=config.eval.kl_estimator, gold_metrics_fn=gold_metrics_fn))
            del ref, eval_roles
        return metrics

    # Step 0 = the initial (SFT) policy on a fresh run: the baseline of every curve.
    state, _ = common.fit(config, workdir, state, train_iter, dpo_objective.loss_fn, loss_config, mesh=mesh,
                          eval_fn=evaluate, frozen=reference, eval_at_start=bool(config.eval.at_start))

    model_dir = os.path.join(workdir, "model")
    export_cfg = policy_cfg.replace(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=encoder.pad_id)
    distributed.export(save_pretrained, export_cfg, state.params, model_dir, tokenizer=tokenizer)
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    evals = [r for r in rows if "eval/dpo/loss" in r]
    summary = {"loss": loss_config.loss, "beta": loss_config.beta, "label_smoothing": loss_config.label_smoothing,
               "steps": config.train.steps, "final": rows[-1] if rows else {},
               "init": evals[0] if evals and evals[0]["step"] == 0 else {}, "evals": evals,
               "init_from": config.policy.init_from, "reward_init_from": config.reward.init_from,
               "data_dir": common.comparison_source(config.data)[1] or "",
               "ranked_lists": bool(config.data.ranked_lists),
               "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
               "skipped": {"train": skipped_train, "eval": skipped_eval}, "reference": reference_info,
               "reward_normaliser": normaliser, "kl_estimator": config.eval.kl_estimator,
               "eval_temperature": sampling.temperature, "seconds": round(time.time() - t0, 1), "model_dir": model_dir}
    common.write_json(os.path.join(workdir, "summary.json"), summary)
    return summary, state


@functools.partial(jax.jit, static_argnames="loss_config")
def _eval_terms(params, batch, reference, loss_config):
    """Per-pair terms and loss of an eval pairs batch (module-level jit: one compile per shape and config)."""
    terms = dpo_objective.pair_terms(params, batch, frozen=reference, config=loss_config)
    return terms, dpo_objective.per_pair_loss(terms["delta_B"], loss_config)


def _reward_normaliser(config, workdir, params, policy_cfg, weights, reward, prompt_source, prompt_dir, encoder,
                       sampling, mesh):
    """(gain, bias, summary dict) of the proxy reward: identity without an RM or with reward.normalise off; else
    fitted once (PPO's normaliser: the initial policy's RM scores on training prompts → mean 0, std 1) and kept
    in `<workdir>/reward_normaliser.npz` so a resumed run uses the same one."""
    import jax.numpy as jnp

    identity = (jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32))
    if reward is None or not config.reward.normalise:
        return (*identity, {"gain": 1.0, "bias": 0.0, "fitted": False})
    key = json.dumps({"reward_init_from": config.reward.init_from, "policy": weights,
                      "temperature": sampling.temperature, "max_new_tokens": sampling.max_new_tokens}, sort_keys=True)

    def fit() -> dict:
        from rlhfjax.data.hh import load_prompts

        examples, _ = load_prompts(prompt_source, data_dir=prompt_dir, split=config.data.train_split,
                                   limit=config.data.limit or None)
        policy = Role("policy", "lm", policy_cfg, params, None, config.policy.init_from)
        roles = Roles(policy=policy, reference=policy, reward=reward)  # it samples the policy, the RM scores
        gain, bias = evaluation.fit_normaliser(params, roles, examples, mesh, encoder=encoder,
                                               batch_size=config.eval.batch_size, sampling=sampling,
                                               num_batches=config.reward.norm_batches, seed=config.seed)
        return {"gain": np.float32(gain), "bias": np.float32(bias)}

    stored, _ = computed_once(os.path.join(workdir, NORMALISER_FILE), key, fit, what="reward normaliser")
    gain, bias = float(stored["gain"]), float(stored["bias"])
    print(f"reward normaliser: gain {gain:.4g} bias {bias:.4g}", flush=True)
    return jnp.float32(gain), jnp.float32(bias), {"gain": gain, "bias": bias, "fitted": True}
