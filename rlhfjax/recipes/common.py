"""Pieces every recipe shares: data sources (toy lab or HF/local), tokenizer, model init, train state.

Config sections used here (see experiments/toylab_sft.py for a documented example):
`data` (source, data_dir, splits, toylab_dir/toylab_seed, lengths, limit), `tokenizer.path`,
`model` (init_from or a preset architecture), `optim`, `train`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import datasets
import jax
import jax.numpy as jnp
import ml_collections

from rlhfjax.data.batching import Encoder, TokenizeConfig
from rlhfjax.models.hf import load_tokenizer
from rlhfjax.train import TrainState, make_optimizer, make_schedule
from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.loop import restore_or_init, train

TOYLAB = "toylab"

datasets.disable_progress_bars()  # per-split progress bars drown the training log


def ensure_toylab(directory: str, seed: int) -> dict:
    """Build the toy lab into `directory` unless a build with this seed is already there.

    Built in a temporary sibling directory and renamed, so concurrent or interrupted runs never
    see a half-written lab.
    """
    manifest_path = os.path.join(directory, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("seed") == seed:
            return manifest
        raise ValueError(f"{directory} holds a toy lab built with seed {manifest.get('seed')}, not {seed}; "
                         "pick another data.toylab_dir or the matching data.toylab_seed")
    from rlhfjax.data.toylab import build_toylab

    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".toylab-", dir=parent)
    try:
        manifest = build_toylab(tmp, seed)
        os.replace(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(manifest_path):  # lost a race to another process: fine if it finished
            raise
    return manifest


def is_toylab(data_config) -> bool:
    return data_config.source == TOYLAB


def resolve_source(data_config, kind: str) -> tuple[str, str | None]:
    """(source, data_dir) for a loader: the toy lab's `kind` folder, or the configured source."""
    if is_toylab(data_config):
        ensure_toylab(data_config.toylab_dir, data_config.toylab_seed)
        return os.path.join(data_config.toylab_dir, kind), data_config.data_dir or None
    return data_config.source, data_config.data_dir or None


def tokenizer_for(config):
    """Tokenizer from `tokenizer.path`, else the toy lab's, else the initial model's."""
    if config.tokenizer.path:
        return load_tokenizer(config.tokenizer.path)
    if is_toylab(config.data):
        ensure_toylab(config.data.toylab_dir, config.data.toylab_seed)
        return load_tokenizer(os.path.join(config.data.toylab_dir, "tokenizer"))
    if config.model.init_from:
        return load_tokenizer(config.model.init_from)
    raise ValueError("no tokenizer: set tokenizer.path or model.init_from (or use data.source='toylab')")


def encoder_for(config, tokenizer) -> Encoder:
    return Encoder(tokenizer, TokenizeConfig(max_prompt_len=config.data.max_prompt_len,
                                             max_response_len=config.data.max_response_len,
                                             template=config.data.template))


def optim_config(config) -> ml_collections.ConfigDict:
    """`config.optim` with total_steps = train.steps when left at 0."""
    optim = ml_collections.ConfigDict(config.optim.to_dict())
    optim.total_steps = optim.total_steps or config.train.steps
    return optim


def create_state(params, config, rng) -> TrainState:
    optim = optim_config(config)
    return TrainState.create(jax.tree.map(jnp.asarray, params), make_optimizer(optim), rng,
                             schedule=make_schedule(optim))


def fit(config, workdir: str, state: TrainState, train_iter, loss_fn, loss_config, *, eval_fn=None,
        frozen=None) -> tuple[TrainState, list[dict]]:
    """Resume from `<workdir>/checkpoints` if a checkpoint is there, then train to `train.steps`
    with the shared loop (checkpoints, metrics.jsonl + TensorBoard, evals)."""
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints)
    state, resumed = restore_or_init(checkpointer, state, train_iter)
    if resumed:
        print(f"resumed from the checkpoint at step {resumed}", flush=True)
    try:
        return train(state, train_iter, loss_fn, num_steps=config.train.steps, run_dir=workdir, frozen=frozen,
                     loss_config=loss_config, config_dict=config.to_dict(), checkpointer=checkpointer,
                     save_every=config.train.save_every, log_every=config.train.log_every,
                     max_consecutive_nonfinite=config.optim.max_consecutive_nonfinite, resumed_from=resumed,
                     eval_fn=eval_fn, eval_every=config.train.eval_every, progress=config.train.progress)
    finally:
        checkpointer.close()


def report_loading(name: str, report) -> None:
    print(f"{name}: {report.summary()}", flush=True)


def write_json(path: str, payload) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
    os.replace(tmp, path)
