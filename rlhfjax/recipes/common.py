"""Pieces every recipe shares: data sources (toy lab or HF/local), tokenizer, model init, train state.

Config sections used here (see experiments/toylab_sft.py for a documented example):
`data` (source, data_dir, splits, toylab_dir/toylab_seed, lengths, limit), `tokenizer.path`,
`model` (init_from or a preset architecture), `optim`, `train`, `mesh` (parallel.default_mesh_config).
"""

from __future__ import annotations

import os

import datasets
import ml_collections
import numpy as np
from jax.sharding import Mesh

from rlhfjax import parallel
from rlhfjax.data import tokenizing
from rlhfjax.data.batching import BatchIterator
from rlhfjax.data.hh import load_hh, load_ranked
from rlhfjax.data.sources import TOYLAB, ensure_toylab  # noqa: F401 (re-exported)
from rlhfjax.data.sources import is_toylab, ranked_source, resolve_source
from rlhfjax.data.tokenizing import encoder_for  # noqa: F401 (re-exported)
from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig, api
from rlhfjax.models.factory import model_from_config, preset_from_config
from rlhfjax.train import TrainState
from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.loop import offline_step, run_loop
from rlhfjax.train.metrics import write_json  # noqa: F401 (re-exported for recipes)
from rlhfjax.train.optim import with_total_steps
from rlhfjax.train.state import create_on_mesh

datasets.disable_progress_bars()  # per-split progress bars drown the training log


def tokenizer_for(config):
    """Tokenizer from `tokenizer.path`, else the toy lab's, else `model.init_from`'s."""
    return tokenizing.tokenizer_for(config, config.model.init_from)


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
    if section.get("init_from"):
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


def fit(config, workdir: str, state: TrainState, train_iter, loss_fn, loss_config, *, mesh: Mesh, eval_fn=None,
        frozen=None, eval_at_start: bool = False) -> tuple[TrainState, list[dict]]:
    """Train to `train.steps` with the shared loop (`run_loop` + `offline_step`): resumes from
    `<workdir>/checkpoints` if a checkpoint is there (onto the state's own shardings), shards every
    batch over `mesh`, and writes checkpoints, metrics.jsonl + TensorBoard and evals. `eval_fn` runs
    under the mesh too (shard its batches with `shard`); `eval_at_start`: also on a fresh run's initial
    state, logged as step 0; `train.stop_at` > 0 stops after that step (`run_loop`)."""
    check_batch_size(config.train.batch_size, mesh, state.accum_steps)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints)
    step_fn = offline_step(train_iter, loss_fn, frozen=frozen, loss_config=loss_config,
                           prepare_batch=lambda batch: shard(batch, mesh, process_rows=True))
    try:
        with parallel.activate(mesh):  # the models' logical constraints resolve against this mesh
            return run_loop(state, step_fn, num_steps=config.train.steps, run_dir=workdir, data_iter=train_iter,
                            checkpointer=checkpointer, config_dict=config.to_dict(),
                            save_every=config.train.save_every, log_every=config.train.log_every, eval_fn=eval_fn,
                            eval_every=config.train.eval_every, eval_at_start=eval_at_start,
                            max_consecutive_nonfinite=config.optim.max_consecutive_nonfinite,
                            progress=config.train.progress, stop_at=config.train.get("stop_at", 0))
    finally:
        checkpointer.close()


def report_loading(name: str, report) -> None:
    print(f"{name}: {report.summary()}", flush=True)


# --------------------------------------------------------------------------------------------
# Comparisons: what the rm and dpo recipes (and any preference objective) read from `config.data`

TOYLAB_POOL = "mixed"  # the toy lab's annotator pool when data.data_dir is empty


def comparison_source(data_config) -> tuple[str, str | None]:
    """(source, data_dir) of pairwise comparisons: the toy lab's `comparisons` folder and its annotator pool
    (`data.data_dir`, default `TOYLAB_POOL`: every pool at once would repeat each pair with several labels),
    or the configured source and subset."""
    source, data_dir = resolve_source(data_config, "comparisons")
    if is_toylab(data_config) and not data_dir:
        data_dir = TOYLAB_POOL
    return source, data_dir


def load_comparisons(config, split: str, limit: int, name: str, *, whole_lists: bool = False) -> list:
    """The comparisons of `split`, reported under `name`: `PreferencePair`s of the comparison source, or with
    `data.ranked_lists` the ranked lists (best → worst) — whole with `whole_lists` (a ranked loss), else as
    every pair i < j of each list. The toy lab ranks its training prompts only, so its other splits are the
    annotator pool's pairs."""
    data = config.data
    if data.ranked_lists and not (is_toylab(data) and split != data.train_split):
        source, data_dir = ranked_source(data)
        lists, report = load_ranked(source, data_dir=data_dir, split=split, limit=limit or None)
        if whole_lists:
            report_loading(f"{name} (ranked lists)", report)
            return lists
        pairs = [p for ranked in lists for p in ranked.pairs()]
        report_loading(f"{name} (ranked lists -> {len(pairs)} pairs)", report)
        return pairs
    source, data_dir = comparison_source(data)
    pairs, report = load_hh(source, data_dir=data_dir, split=split, limit=limit or None)
    report_loading(name, report)
    return pairs


# --------------------------------------------------------------------------------------------
# Epochs and validation splits of offline recipes (rm uses them; any dataset objective can)


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
    epochs = int(config.train.get("epochs", 0) or 0)
    return BatchIterator(examples, config.train.batch_size, collate, seed=config.seed, num_epochs=None,
                         drop_last=epochs <= 0)


def resolve_epochs(config, steps_per_epoch: int):
    """`config` itself, or with `train.epochs` > 0 a copy with train.steps = epochs × batches per epoch and
    an eval (and validation) at the end of every epoch."""
    epochs = int(config.train.get("epochs", 0) or 0)
    if epochs <= 0:
        return config
    config = config.copy_and_resolve_references()
    config.train.steps = epochs * steps_per_epoch
    config.train.eval_every = steps_per_epoch
    return config
