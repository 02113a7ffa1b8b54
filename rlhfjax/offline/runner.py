"""The offline harness: a dataset objective trained on `config.mesh` by the shared loop.

    state = create_state(params, shardings, config, rng, mesh)       # params on the mesh, optimizer state too
    state, records = fit(config, workdir, state, batches, loss_fn, loss_config, mesh=mesh, eval_fn=...)

`fit` shards every batch over the mesh (exact gradient accumulation: `train.update`), resumes from
`<workdir>/checkpoints`, evaluates, logs and checkpoints through the loop's hooks (`train.loop`). The sft, rm
and lm recipes use it directly; methods with a frozen reference run it through `offline.reference`.

Config sections read: `model` (init_from or a preset architecture), `optim`, `train` (steps, batch_size,
log/eval/save periods, keep_checkpoints, progress, stop_at; rm also epochs), `mesh`, `seed`.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np
from jax.sharding import Mesh

from rlhfjax import parallel
from rlhfjax.data.batching import BatchIterator
from rlhfjax.errors import ConfigError
from rlhfjax.harness.state import PolicyState
from rlhfjax.models import ModelConfig, api
from rlhfjax.models.factory import model_from_config, preset_from_config
from rlhfjax.train import TrainState
from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.loop import Checkpoint, Evaluate, Log, StopAt, offline_step, run_loop
from rlhfjax.train.optim import with_total_steps
from rlhfjax.train.state import create_on_mesh


def optim_config(config) -> ml_collections.ConfigDict:
    """`config.optim` with total_steps = train.steps when left at 0."""
    return with_total_steps(config.optim, config.train.steps)


# --------------------------------------------------------------------------------------------
# The mesh: every offline recipe runs on `config.mesh` (data parallel over all local devices by default)


check_batch_size = parallel.check_batch_size  # every batch splits evenly over the data-parallel devices


def mesh_for(config, mesh: Mesh | None = None) -> Mesh:
    """`mesh` if given (tests pass one), else `parallel.make_mesh(config.mesh)`."""
    return mesh if mesh is not None else parallel.make_mesh(config.mesh)


def shard(batch, mesh: Mesh, process_rows: bool = False):
    """A host batch onto the mesh, leading dim over the data-parallel axes: the whole global batch, or
    (`process_rows`) this process's rows of it, as a `BatchIterator` yields them (`parallel.shard_batch`)."""
    return parallel.shard_batch(batch, mesh, process_rows=process_rows)


def model_params(section, vocab_size: int, rng, mesh: Mesh, kind: str = "lm") -> tuple[ModelConfig, dict, dict]:
    """(ModelConfig, params on `mesh`, their shardings) for a `config.model` section: the HF checkpoint
    `section.init_from` placed onto the shardings of its logical axes, or a fresh preset created already
    sharded (no full copy on one device)."""
    if section.init_from:
        cfg, host = model_from_config(section, vocab_size, rng)
        shardings = api.param_shardings(cfg, mesh, kind)
        return cfg, api.place(host, shardings), shardings
    cfg = preset_from_config(section, vocab_size)
    params, shardings = api.init_sharded(cfg, rng, mesh, kind)
    return cfg, params, shardings


def create_state(params, param_shardings, config, rng, mesh: Mesh) -> TrainState:
    """The run's TrainState on `mesh` (`train.state.create_on_mesh`; params donated), its schedule over
    `train.steps` unless `optim.total_steps` is set; each batch splits into `optim.grad_accum_steps`
    micro-batches (exact weighted accumulation, `train.update`)."""
    return create_on_mesh(params, param_shardings, optim_config(config), rng, mesh)


def fit(config, workdir: str, state, train_iter, loss_fn, loss_config, *, mesh: Mesh, eval_fn=None,
        frozen=None, eval_at_start: bool = False) -> tuple[Any, list[dict]]:
    """Train to `train.steps` with the shared loop (`run_loop` + `offline_step`): resumes from
    `<workdir>/checkpoints` if a checkpoint is there (onto the state's own shardings), shards every
    batch over `mesh`, and writes checkpoints, metrics.jsonl + TensorBoard and evals. `eval_fn` runs
    under the mesh too (shard its batches with `shard`); `eval_at_start`: also on a fresh run's initial
    state, logged as step 0; `train.stop_at` > 0 stops after that step (`train.loop.StopAt`).

    `state` is the TrainState, or a `harness.state.PolicyState` wrapping it (a method with a frozen reference
    and a proxy reward's normaliser: `offline.reference`), whose step count follows its TrainState's."""
    wrapped = isinstance(state, PolicyState)
    train_of = (lambda s: s.train) if wrapped else (lambda s: s)
    check_batch_size(config.train.batch_size, mesh, train_of(state).accum_steps)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints)
    step_fn = offline_step(train_iter, loss_fn, frozen=frozen, loss_config=loss_config,
                           prepare_batch=lambda batch: shard(batch, mesh, process_rows=True), train_state_of=train_of,
                           with_train_state=(lambda s, train: s.replace(train=train, iteration=train.step))
                           if wrapped else (lambda s, train: train))
    t = config.train
    log = Log(workdir, t.log_every, config=config.to_dict(), progress=t.progress)
    hooks = [StopAt(t.stop_at), *([Evaluate(eval_fn, t.eval_every, at_start=eval_at_start)] if eval_fn else []), log,
             Checkpoint(checkpointer, train_iter, t.save_every, config=config.to_dict())]
    try:
        with parallel.activate(mesh):  # the models' logical constraints resolve against this mesh
            state = run_loop(state, step_fn, num_steps=t.steps, hooks=hooks, step_of=lambda s: train_of(s).step,
                             train_state_of=train_of, max_consecutive_nonfinite=config.optim.max_consecutive_nonfinite)
        return state, log.records
    finally:
        checkpointer.close()


# --------------------------------------------------------------------------------------------
# Epochs and validation splits (the rm recipe uses them; any dataset objective can)


def split_validation(examples, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a fixed random `fraction` of `examples` (at least one) held out, drawn from
    `seed`; both keep the original order."""
    n = len(examples)
    k = max(1, int(round(fraction * n)))
    if not 0 < fraction < 1 or k >= n:
        raise ConfigError(f"rm.val_fraction={fraction} of {n} training examples leaves no training or no "
                          "validation examples")
    held = set(np.random.default_rng([seed, 17]).permutation(n)[:k].tolist())  # own stream: not the batch order
    return [ex for i, ex in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def train_iterator(config, examples, collate) -> BatchIterator:
    """Training batches, repeating forever. With `train.epochs` > 0 no pair is dropped: every epoch visits
    each pair once, its last batch padded with masked rows (`row_mask_B` = 0)."""
    epochs = int(config.train.epochs)
    return BatchIterator(examples, config.train.batch_size, collate, seed=config.seed, num_epochs=None,
                         drop_last=epochs <= 0)


def resolve_epochs(config, steps_per_epoch: int):
    """`config` itself, or with `train.epochs` > 0 a copy with train.steps = epochs × batches per epoch and
    an eval (and validation) at the end of every epoch."""
    epochs = int(config.train.epochs)
    if epochs <= 0:
        return config
    config = config.copy_and_resolve_references()
    config.train.steps = epochs * steps_per_epoch
    config.train.eval_every = steps_per_epoch
    return config
