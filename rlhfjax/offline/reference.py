"""The offline harness of methods that train a policy on a dataset against its frozen initial self, the
reference π_ref (DPO, IPO, cDPO; KTO, ORPO and SimPO on the same axes), so a new one is a pure loss plus a
short recipe:

    setup = prepare(config, mesh)                       # tokenizer, encoder, roles, the held-out evaluator
    train, held_out = usable_pairs(...), usable_pairs(...)  # the method's examples, skips counted (unpaired
                                                        # ones, KTO's: usable_unpaired, collate_unpaired)
    summary, state = run(setup, workdir, Method(...), train, held_out)

What the harness does for every such method:
- The reference column (`Method.reference="column"`): per example, what `Method.reference_fn(ref_params, batch,
  model_cfg)` returns (e.g. summed response log-probs), computed ONCE before training in one jitted pass over the
  train and eval examples, and stored in `<workdir>/reference_logps.npz` under a fingerprint of the tokenized
  examples and of the reference weights (`train.run_cache.computed_once`): a resumed run reuses it, a changed
  dataset, tokenizer, length limit or checkpoint recomputes it. Batches carry their rows' entries by example
  index, so shuffling and resuming keep rows aligned, and the reference's weights stay on the host (placed only
  for the held-out sampling evals). `"on_the_fly"` keeps the reference on the device and hands it to the loss as
  `frozen`; `"none"` (a reference-free loss) neither: the reference is then only the evals' KL anchor.
- The proxy reward's normaliser (with `reward.init_from`): fitted once on the initial policy's samples and kept
  in the checkpointed state (`harness.state.PolicyState`), as the online methods do.
- Evals every `train.eval_every` steps, at the last and (fresh runs, `eval.at_start`) at step 0 = the initial
  policy: the method's own metrics on the eval examples (`Method.eval_rows` per example, summarised by
  `Method.eval_metrics`) and the shared held-out sampling eval (`harness.evaluation.Evaluator`: KL to the
  reference, gold reward and behaviour on the toy lab, normalised proxy reward with an RM; samples.jsonl), so
  every method lands on the reward vs √KL axes of the online ones.
- The loop (`offline.runner.fit`: config.mesh, exact accumulation, resume, checkpoints), the HF export of the policy
  (`model/`) and `summary.json`.

Config read: data, tokenizer, policy (init_from, dtype and how every role runs), reward (init_from, normalise,
norm_batches), eval (prompt_limit, batch_size, temperature, top_p, max_new_tokens, kl_estimator, chunk_size,
at_start), model (a random policy's preset), optim, train, mesh, seed (`config_blocks.toylab_offline_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from rlhfjax import parallel
from rlhfjax.data.batching import BatchIterator, collate_sft, padded_batches
from rlhfjax.data.examples import SFTExample
from rlhfjax.data.hh import load_prompts
from rlhfjax.data.preferences import load_comparisons
from rlhfjax.data.sources import is_toylab, resolve_source
from rlhfjax.data.tokenizing import encoder_for, tokenizer_for
from rlhfjax.errors import ConfigError
from rlhfjax.harness import evaluation
from rlhfjax.harness.roles import Roles, export_policy, load_roles
from rlhfjax.harness.state import PolicyState, create as create_policy_state
from rlhfjax.offline.runner import check_batch_size, fit, mesh_for, shard
from rlhfjax.sampling import SamplingConfig
from rlhfjax.train.checkpoint import latest_step
from rlhfjax.train.metrics import read_jsonl, write_json
from rlhfjax.train.run_cache import computed_once, params_fingerprint

REFERENCE_FILE = "reference_logps.npz"
REFERENCES = ("column", "on_the_fly", "none")  # Method.reference
# Skip reasons of pairs dropped after tokenization (counted, reported, in summary.json).
EMPTY_RESPONSE = "empty_response_after_truncation"
IDENTICAL = "identical_after_truncation"


# --------------------------------------------------------------------------------------------
# Examples: what a method trains on, once tokenization has dropped those that cannot teach


@dataclasses.dataclass
class Examples:
    items: list  # what the method's `collate` takes (None is a padding row)
    digest: str  # sha256 of their token ids in order: part of the reference column's fingerprint
    skipped: dict  # {reason: count} of the rows dropped after tokenization


def usable_pairs(pairs: list, encoder, name: str) -> Examples:
    """The `PreferencePair`s that can teach a pairwise loss: a pair is dropped (and counted) when a response has
    no token after truncation or both responses tokenize to the same ids. Reported under `name`; none left is a
    one-line error."""
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
    if skipped:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))
        print(f"{name}: skipped {sum(skipped.values())} pairs after tokenization ({reasons}); {len(kept)} left",
              flush=True)
    if not kept:
        raise ConfigError(f"{name}: no usable pairs", "check data.source / data.data_dir and the length limits")
    return Examples(kept, digest.hexdigest(), skipped)


@dataclasses.dataclass(frozen=True)
class Unpaired:
    """A labelled example of an unpaired method (KTO): `mismatched` is another example's response, scored under
    this prompt for a batch estimate of KL(π ‖ π_ref) (`usable_unpaired` sets it)."""

    prompt: str
    response: str
    desirable: bool
    mismatched: str = ""


def usable_unpaired(examples: list, encoder, name: str, seed: int) -> Examples:
    """The `Unpaired` examples that can teach — one whose response has no token after truncation is dropped and
    counted; fewer than 2 left is a one-line error — each given the response of the next one along a random order
    of `seed` as `mismatched`: a derangement fixed once per dataset (part of the fingerprint)."""
    kept = [ex for ex in examples if encoder.response_ids(ex.response)]
    skipped = {EMPTY_RESPONSE: len(examples) - len(kept)} if len(kept) < len(examples) else {}
    if skipped:
        print(f"{name}: skipped {skipped[EMPTY_RESPONSE]} examples with no response token after truncation; "
              f"{len(kept)} left", flush=True)
    if len(kept) < 2:
        raise ConfigError(f"{name}: {len(kept)} usable examples, fewer than 2",
                          "check data.source / data.data_dir and the length limits")
    order = np.random.default_rng(seed).permutation(len(kept))
    partner = np.empty_like(order)
    partner[order] = np.roll(order, -1)
    items = [dataclasses.replace(ex, mismatched=kept[j].response) for ex, j in zip(kept, partner)]
    digest = hashlib.sha256()
    for ex in items:
        for ids in (encoder.prompt_ids(ex.prompt), *map(encoder.response_ids, (ex.response, ex.mismatched))):
            digest.update(np.asarray(ids, np.int64).tobytes() + b"|")
    return Examples(items, digest.hexdigest(), skipped)


def collate_unpaired(items: list, encoder) -> dict:
    """`Unpaired` items (None: a padding row) → `collate_sft`'s keys of the (x, y) rows, the same with a `kl_` prefix
    of the (x, y') rows (one padded length for both) and `desirable_B`."""
    both = collate_sft([None if u is None else SFTExample(u.prompt, u.response) for u in items]
                       + [None if u is None else SFTExample(u.prompt, u.mismatched) for u in items], encoder)
    B = len(items)
    batch = {k: v[:B] for k, v in both.items()} | {f"kl_{k}": v[B:] for k, v in both.items() if k != "row_mask_B"}
    return batch | {"desirable_B": np.array([u is not None and u.desirable for u in items], np.float32)}


def indexed_collate(items: list, collate: Callable, column: dict | None = None) -> Callable[[list], dict]:
    """Batches of `items` by index (None: a padding row): `collate` of those items plus, given the reference
    `column` ({key: array over items}), each row's entries looked up by its index (0 on padding rows)."""

    def batch_of(indices) -> dict:
        batch = collate([None if i is None else items[i] for i in indices])
        if column:
            idx = np.array([-1 if i is None else i for i in indices])
            for key, values in column.items():
                batch[key] = np.where(idx >= 0, values[np.maximum(idx, 0)], 0.0).astype(np.float32)
        return batch

    return batch_of


# --------------------------------------------------------------------------------------------
# The reference column: once per dataset, stored with the run


@functools.lru_cache(maxsize=None)
def _jitted(fn: Callable, static: str):
    """One jit per function (module-level functions: one compile per shape and static config)."""
    return jax.jit(fn, static_argnames=static)


def reference_column(fn: Callable, ref_params, model_cfg, examples: Examples, collate: Callable, batch_size: int,
                     mesh) -> dict:
    """{key: float32 array over `examples.items` in order} of `fn(ref_params, batch, model_cfg)`: one jitted
    function over fixed-size batches (a compile per length bucket), on the mesh."""
    parts: dict[str, list] = {}
    batch_of = indexed_collate(examples.items, collate)
    for _, idx, n in padded_batches(range(len(examples.items)), batch_size):
        out = _jitted(fn, "model_cfg")(ref_params, shard(batch_of(idx), mesh), model_cfg=model_cfg)
        for key, values in out.items():
            parts.setdefault(key, []).append(np.asarray(values)[:n])
    return {key: np.concatenate(v).astype(np.float32) for key, v in parts.items()}


def reference_columns(path: str, fingerprint: str, compute) -> tuple[dict, dict]:
    """The stored columns at `path` if their fingerprint (dataset + reference weights) matches, else `compute()`
    → {name: array}, stored there (`train.run_cache.computed_once`). Returns (columns, info for the summary)."""
    return computed_once(path, fingerprint, compute, what="reference log-probs")


# --------------------------------------------------------------------------------------------
# Setup and the method


@dataclasses.dataclass
class OfflineSetup:
    config: ml_collections.ConfigDict
    mesh: Any
    roles: Roles  # the policy on the mesh; the reference's params on the host; the reward model or None
    tokenizer: Any
    encoder: Any
    evaluator: evaluation.Evaluator  # the held-out sampling eval and the reward normaliser
    prompt_source: tuple[str, str | None]  # (source, data_dir) of the prompts the evals and normaliser sample


def prepare(config, mesh=None) -> OfflineSetup:
    """Tokenizer and encoder, the roles (`harness.roles.load_roles`: the policy from `policy.init_from`, or a
    random `model` preset for smoke runs; the same weights as the reference, kept on the host; the reward model
    of `reward.init_from`, if any) and the held-out evaluator (`eval.*`), on `mesh` (default `config.mesh`)."""
    mesh = mesh_for(config, mesh)
    check_batch_size(config.train.batch_size, mesh, config.optim.grad_accum_steps)
    ev = config.eval
    if ev.prompt_limit:
        check_batch_size(ev.batch_size, mesh, what="eval.batch_size")
    tokenizer = tokenizer_for(config, config.policy.init_from)
    encoder = encoder_for(config, tokenizer)
    roles = load_roles(config, mesh, len(tokenizer), with_value=False, reward_optional=True, reference_on_host=True)
    prompt_data = ml_collections.ConfigDict(config.data.to_dict())
    toylab = is_toylab(config.data)
    if toylab:
        prompt_data.data_dir = ""  # the toy lab's prompts have no annotator pools
    source = resolve_source(prompt_data, "prompts")
    sampling = SamplingConfig(max_new_tokens=ev.max_new_tokens, temperature=float(ev.temperature),
                              top_p=float(ev.top_p), eos_id=tokenizer.eos_token_id, pad_id=encoder.pad_id)
    gold_fn = gold_metrics_fn = None
    if toylab:
        from rlhfjax.data.toylab import behaviour_metrics as gold_metrics_fn, gold_rewards as gold_fn
    with parallel.activate(mesh):
        batches = (evaluation.eval_batches(*source, config.data.eval_split, ev.prompt_limit, encoder, ev.batch_size,
                                           name="eval") if ev.prompt_limit else [])  # (source, data_dir, split, ...)
    judge = evaluation.Evaluator(roles, mesh, sampling, tokenizer, encoder, ev.batch_size, config.seed, batches,
                                 kl_estimator=ev.kl_estimator, chunk_size=ev.chunk_size or None, gold_fn=gold_fn,
                                 gold_metrics_fn=gold_metrics_fn)
    return OfflineSetup(config, mesh, roles, tokenizer, encoder, judge, source)


@dataclasses.dataclass(frozen=True)
class Method:
    """An offline method with a reference, as the harness runs it."""

    name: str  # the command: names the run's log lines and the eval metrics (`eval/<name>/...`)
    loss_fn: Callable  # objectives' (params, batch, *, frozen, config, rng) -> (total, count, metrics)
    loss_config: Any  # hashable (static in the jitted update)
    collate: Callable[[list], dict]  # items (None: a padding row) → host batch
    reference: str = "column"  # REFERENCES: how the loss sees π_ref
    reference_fn: Callable | None = None  # (ref_params, batch, model_cfg) -> {key: B array}: the column's entries
    reference_batch_size: int = 0  # examples per batch of the one-off reference pass; 0 = train.batch_size
    # (params, batch, frozen, loss_config) -> {name: B array} per eval example, jitted with a static loss_config;
    # then eval_metrics(rows over the eval examples, their items) -> {metric: float} on the host
    eval_rows: Callable | None = None
    eval_metrics: Callable[[dict, list], dict] | None = None
    unit: str = "examples"  # what the summary counts (`train_<unit>`, `eval_<unit>`)
    summary: dict = dataclasses.field(default_factory=dict)  # the method's own summary.json entries


def pair_gold_agreement(margin_B: np.ndarray, valid_B: np.ndarray, pairs: list, gold_fn) -> float:
    """How often a pairwise method's margin (chosen over rejected) has the sign of the gold reward's preference,
    ties counting half, over the valid pairs the gold reward decides (nan when it decides none)."""
    prompts = [p.prompt for p in pairs]
    gold = (np.asarray(gold_fn(prompts, [p.chosen for p in pairs]))
            - np.asarray(gold_fn(prompts, [p.rejected for p in pairs])))
    valid = valid_B > 0
    margin, gold = margin_B[valid], gold[valid]
    decided = gold != 0
    agree = (np.sign(margin[decided]) == np.sign(gold[decided])) + 0.5 * (margin[decided] == 0)
    return float(agree.mean()) if decided.any() else float("nan")


def comparison_pairs(setup: OfflineSetup, name: str) -> tuple[Examples, Examples]:
    """The train and held-out comparisons (`data.preferences.load_comparisons` of data.train_split / data.limit and
    data.eval_split / data.eval_limit) that can teach a pairwise loss (`usable_pairs`), as "<name> train" / "eval"."""
    data = setup.config.data
    return tuple(usable_pairs(load_comparisons(setup.config, split, limit, f"{name} {part}"), setup.encoder,
                              f"{name} {part}")
                 for part, split, limit in (("train", data.train_split, data.limit),
                                            ("eval", data.eval_split, data.eval_limit)))


def pair_eval_metrics(summarise: Callable[[dict], dict], name: str, gold_fn, margin_key: str = "margin_B"):
    """`Method.eval_metrics` of a pairwise method: `summarise(rows)` (its metrics over the eval pairs) as floats and,
    given the toy lab's `gold_fn`, `eval/<name>/gold_agreement` of `rows[margin_key]` (`pair_gold_agreement`)."""

    def eval_metrics(rows: dict, pairs: list) -> dict:
        metrics = {k: float(v) for k, v in summarise(rows).items()}
        if gold_fn is not None:
            metrics[f"eval/{name}/gold_agreement"] = pair_gold_agreement(rows[margin_key], rows["valid_B"], pairs,
                                                                         gold_fn)
        return metrics

    return eval_metrics


def prompt_gold_agreement(score_B: np.ndarray, valid_B: np.ndarray, examples: list, gold_fn) -> float:
    """How often a per-example score (e.g. an implicit reward) orders two valid examples of the same prompt as the
    gold reward does, ties in the score counting half, over the same-prompt pairs the gold reward decides (nan when
    none): `pair_gold_agreement` for unpaired examples (anything with `.prompt` and `.response`)."""
    gold = np.asarray(gold_fn([e.prompt for e in examples], [e.response for e in examples]))
    groups: dict[str, list] = {}
    for i, e in enumerate(examples):
        if valid_B[i] > 0:
            groups.setdefault(e.prompt, []).append(i)
    agree = []
    for idx in groups.values():
        d_score, d_gold = (np.subtract.outer(x[idx], x[idx]) for x in (np.asarray(score_B), gold))
        decided = np.triu(d_gold != 0, 1)
        agree.append((np.sign(d_score[decided]) == np.sign(d_gold[decided])) + 0.5 * (d_score[decided] == 0))
    agree = np.concatenate(agree) if agree else np.zeros(0)
    return float(agree.mean()) if agree.size else float("nan")


# --------------------------------------------------------------------------------------------
# The run


def run(setup: OfflineSetup, workdir: str, method: Method, train: Examples, held_out: Examples) -> tuple[dict, Any]:
    """Train `method` on `train` (evaluated on `held_out`) as the module docstring says → (summary, final state)."""
    t0 = time.time()
    config, mesh, roles = setup.config, setup.mesh, setup.roles
    if method.reference not in REFERENCES:
        raise ValueError(f"Method.reference must be one of {REFERENCES}, got {method.reference!r}")
    B = config.train.batch_size
    if len(train.items) < B:
        raise ConfigError(f"{len(train.items)} usable train {method.unit}, fewer than train.batch_size={B}",
                          "use a smaller train.batch_size or more data (data.limit)")
    ref_batch = method.reference_batch_size or B
    check_batch_size(ref_batch, mesh, what=f"{method.name}.reference_batch_size")
    os.makedirs(workdir, exist_ok=True)
    policy = roles.policy
    # The reference on the device for the whole run only when the loss takes it (fresh buffers: never the state's).
    frozen = roles.reference.device_params() if method.reference == "on_the_fly" else None

    columns, reference_info = {}, {"mode": {"column": "precomputed"}.get(method.reference, method.reference)}
    with parallel.activate(mesh):
        if method.reference == "column":  # computed with the initial policy's params, = the reference
            weights = params_fingerprint(policy.cfg, roles.reference.params)
            fn = f"{method.reference_fn.__module__}.{method.reference_fn.__qualname__}"  # what the column holds
            fingerprint = hashlib.sha256(f"{fn}\n{train.digest}\n{held_out.digest}\n{weights}".encode()).hexdigest()

            def compute():
                return {f"{split}_{key}": values for split, examples in (("train", train), ("eval", held_out))
                        for key, values in reference_column(method.reference_fn, policy.params, policy.cfg, examples,
                                                            method.collate, ref_batch, mesh).items()}

            stored, info = reference_columns(os.path.join(workdir, REFERENCE_FILE), fingerprint, compute)
            reference_info.update(info)
            for split in ("train", "eval"):
                columns[split] = {k[len(split) + 1:]: v for k, v in stored.items() if k.startswith(f"{split}_")}

    train_iter = BatchIterator(list(range(len(train.items))), B,
                               indexed_collate(train.items, method.collate, columns.get("train")), seed=config.seed,
                               num_epochs=None)
    eval_batches = [indexed_collate(held_out.items, method.collate, columns.get("eval"))(idx)
                    for _, idx, _ in padded_batches(range(len(held_out.items)), B)]
    # `policy.params` are donated to the state here: from now on the policy is `state.train.params`.
    state = create_policy_state(config, mesh, policy.params, policy.shardings, total_steps=config.train.steps,
                                rng=jax.random.PRNGKey(config.seed))
    judge = dataclasses.replace(setup.evaluator, roles=dataclasses.replace(roles, policy=dataclasses.replace(
        policy, params=None)), samples_path=os.path.join(workdir, "samples.jsonl"))
    if latest_step(os.path.join(workdir, "checkpoints")) is None and config.reward.normalise and roles.reward:
        source, data_dir = setup.prompt_source
        examples, _ = load_prompts(source, data_dir=data_dir, split=config.data.train_split,
                                   limit=config.data.limit or None)
        with parallel.activate(mesh):
            state = judge.normalise(state, state.train.params, examples, config.reward.norm_batches)

    def evaluate(state: PolicyState) -> dict:  # under the mesh (the loop runs it inside `fit`'s activation)
        metrics = {}
        if method.eval_rows is not None:
            rows_fn = _jitted(method.eval_rows, "loss_config")
            parts = [jax.device_get(rows_fn(state.train.params, shard(b, mesh), frozen, loss_config=method.loss_config))
                     for b in eval_batches]
            rows = {k: np.concatenate([p[k] for p in parts])[:len(held_out.items)] for k in parts[0]}
            metrics.update(method.eval_metrics(rows, held_out.items))
        metrics.update(judge(state.train.params, state.reward_gain, state.reward_bias, int(state.iteration)))
        return metrics

    # Step 0 = the initial policy on a fresh run: the baseline of every curve.
    state, _ = fit(config, workdir, state, train_iter, method.loss_fn, method.loss_config, mesh=mesh,
                   eval_fn=evaluate, frozen=frozen, eval_at_start=bool(config.eval.at_start))

    model_dir = export_policy(policy.cfg, state.train.params, workdir, setup.tokenizer, setup.encoder.pad_id)
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    fitted = bool(config.reward.normalise and roles.reward is not None)
    summary = {"steps": config.train.steps, "final": rows[-1] if rows else {},
               "init": evals[0] if evals and evals[0]["step"] == 0 else {}, "evals": evals,
               "init_from": config.policy.init_from, "reward_init_from": config.reward.init_from,
               f"train_{method.unit}": len(train.items), f"eval_{method.unit}": len(held_out.items),
               "skipped": {"train": train.skipped, "eval": held_out.skipped}, "reference": reference_info,
               "reward_normaliser": {"gain": float(state.reward_gain), "bias": float(state.reward_bias),
                                     "fitted": fitted},
               "kl_estimator": config.eval.kl_estimator, "eval_temperature": judge.sampling.temperature,
               "seconds": round(time.time() - t0, 1), "model_dir": model_dir, **method.summary}
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary, state
