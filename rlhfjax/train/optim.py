"""Optimizer from config: clip by global norm -> AdamW (decoupled decay) -> LR schedule.

Objectives never build optimizers; a run builds one with `make_optimizer(config)`: behind
`optax.apply_if_finite` (a non-finite step is skipped and counted), with the learning rate an
`optax.inject_hyperparams` hyperparameter (logged from the state). Gradient
accumulation is not an optimizer wrapper: `train.update` splits each batch into
`grad_accum_steps` micro-batches and weights them exactly, so the optimizer, and the schedule,
step once per update.

Optional fields a recipe may add to its own copy of the optim config (not in the defaults, read with
`.get`): `freeze_steps` > 0 holds the top-level param subtrees named in `frozen` (comma-separated,
default "backbone") fixed for the first `freeze_steps` updates (`freeze_for`); the rm recipe's
`rm.freeze_backbone_steps` sets them so a fresh scalar head trains before the backbone moves.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import ml_collections
import jax.numpy as jnp
import optax

from rlhfjax.choices import SCHEDULES
from rlhfjax.config_blocks import optim_config as default_optim_config  # noqa: F401 (config.optim's defaults)
from rlhfjax.errors import ConfigError
from rlhfjax.train.state import finite_steps_only



def with_total_steps(config, total_steps: int) -> ml_collections.ConfigDict:
    """A copy of an optim config whose `total_steps`, when left at 0, is the run's `total_steps`."""
    optim = ml_collections.ConfigDict(config.to_dict())
    optim.total_steps = optim.total_steps or total_steps
    return optim


def make_schedule(config) -> optax.Schedule:
    return _schedule(float(config.learning_rate), int(config.warmup_steps), int(config.total_steps),
                     str(config.schedule))


# Equal configs give the same schedule and optimizer objects: a TrainState holds them as static (hashed)
# fields, so another run with the same optim config in one process (tests, notebooks, sweeps) reuses the
# compiled update instead of compiling it again.
@functools.lru_cache(maxsize=64)
def _schedule(lr: float, warm: int, total: int, schedule: str) -> optax.Schedule:
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    decay_steps = max(total - warm, 1)
    if schedule == "constant":
        after = optax.constant_schedule(lr)
    elif schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        after = optax.linear_schedule(lr, 0.0, decay_steps)
    if warm <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def _decay_mask(params):
    # Decay weight matrices/embeddings only; norms' scales and biases are 1-D.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config) -> optax.GradientTransformation:
    """The optax chain every objective trains with (see `default_optim_config`), wrapped in
    `freeze_for` when the config asks for `freeze_steps` > 0."""
    freeze_steps = int(config.get("freeze_steps", 0) or 0)
    frozen = tuple(k for k in str(config.get("frozen", "backbone")).split(",") if k) if freeze_steps > 0 else ()
    return _optimizer(float(config.grad_clip_norm or 0.0), make_schedule(config), float(config.b1), float(config.b2),
                      float(config.eps), float(config.weight_decay), freeze_steps if frozen else 0, frozen)


@functools.lru_cache(maxsize=64)
def _optimizer(clip: float, schedule, b1: float, b2: float, eps: float, weight_decay: float,
               freeze_steps: int = 0, frozen: tuple[str, ...] = ()):
    parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
    # The learning rate is an injected hyperparameter: the state holds the rate of the step just taken, which
    # `train.update` logs (`learning_rate_of`) without knowing the schedule.
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("b1", "b2", "eps", "weight_decay", "mask"))
    parts.append(adamw(learning_rate=schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask))
    tx = optax.chain(*parts)
    tx = freeze_for(tx, frozen, freeze_steps) if freeze_steps > 0 and frozen else tx
    return finite_steps_only(tx)


def learning_rate_of(opt_state):
    """The learning rate of the last step an optimizer state took (its injected hyperparameter; the schedule's
    first value before any step), or None for an optimizer without one."""
    hyperparams = optax.tree_utils.tree_get(opt_state, "hyperparams", default=None)
    return None if hyperparams is None else hyperparams.get("learning_rate")


class FreezeState(NamedTuple):
    inner: optax.OptState
    updates_seen: jax.Array  # int32: updates seen, frozen ones included


def freeze_for(inner: optax.GradientTransformation, frozen: tuple[str, ...],
               steps: int) -> optax.GradientTransformation:
    """`inner`, except that the top-level param subtrees named in `frozen` stay exactly where they are for
    the first `steps` updates. Their gradients are zeroed before `inner` (so neither the global-norm clip
    nor Adam's moments see them) and their final updates are zeroed after it (decoupled weight decay
    would otherwise still move them). From update `steps` + 1 on, everything trains; the schedule keeps
    counting through the frozen phase."""
    frozen = tuple(frozen)

    def mask_of(tree):
        missing = [k for k in frozen if k not in tree]
        if missing:
            raise KeyError(f"cannot freeze {missing}: the params have top-level keys {sorted(tree)}")
        return {k: jax.tree.map(lambda _, f=k in frozen: f, v) for k, v in tree.items()}

    def init(params):
        if isinstance(params, dict):  # fail at state creation, not at the first update (optax may pass a placeholder)
            mask_of(params)
        return FreezeState(inner.init(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        holding = state.updates_seen < steps
        hold = lambda tree: jax.tree.map(  # noqa: E731
            lambda u, f: jnp.where(holding, jnp.zeros_like(u), u) if f else u, tree, mask_of(tree))
        new_updates, inner_state = inner.update(hold(updates), state.inner, params)
        return hold(new_updates), FreezeState(inner_state, state.updates_seen + 1)

    return optax.GradientTransformation(init, update)
