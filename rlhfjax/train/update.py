"""The one jitted update every objective uses, with exact weighted gradient accumulation.

`loss_fn(params, batch, *, frozen, config, rng) -> (total, count, metrics)`: the loss is the masked
sum `total` over `count` units (tokens, rows, …), so the mean is `total / count` (DESIGN convention
10). The update splits the batch into `state.accum_steps` micro-batches (strided rows, so each
stays spread over the data-parallel devices), and combines their gradients weighted by their
counts: the gradient equals the full batch's `∇(Σ total / Σ count)` whatever the counts of the
micro-batches, and the optimizer (and its LR schedule) steps once per call.

A step whose loss or any gradient is not finite is skipped (params and optimizer state
unchanged) and counted, by the optimizer's `optax.apply_if_finite` (`train.state.finite_steps_only`);
the host raises `NonFiniteError` via `check_nonfinite` once the count reaches the configured limit.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rlhfjax.errors import UserError
from rlhfjax.train.optim import learning_rate_of
from rlhfjax.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


class NonFiniteError(UserError, RuntimeError):
    """Too many non-finite steps in a row: the CLI's one-line error (exit 2), the last good checkpoint kept."""


def split_micro_batches(batch, k: int):
    """Each array leaf `[B, ...]` → `[k, B // k, ...]`, micro-batch i holding rows i, i + k, i + 2k, …;
    0-d leaves are shared by every micro-batch (returned unchanged, see `_micro`)."""

    def split(x):
        if jnp.ndim(x) == 0:
            return x
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible by grad_accum_steps={k}")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def weighted_grads(params, batch, frozen, rng, loss_fn: LossFn, config, accum_steps: int = 1):
    """→ (loss = Σ total / Σ count, Σ count, metrics, grads of that loss), over `accum_steps`
    micro-batches. Each micro-batch's gradient is that of its own mean; they are combined with
    weights count_i / Σ count, which is the full batch's gradient exactly (one micro-batch: weight 1).
    Metrics are count-weighted means of the micro-batches' metrics."""

    def one(micro, key):
        def mean_loss(p):
            total, count, metrics = loss_fn(p, micro, frozen=frozen, config=config, rng=key)
            count = jax.lax.stop_gradient(jnp.asarray(count, jnp.float32))
            return total / jnp.maximum(count, 1.0), (count, metrics)

        (loss, (count, metrics)), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
        return loss, count, metrics, grads

    if accum_steps == 1:
        return one(batch, rng)
    micro_batches = split_micro_batches(batch, accum_steps)
    keys = jax.random.split(rng, accum_steps)

    def body(acc, i):
        micro = jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else x[i], micro_batches)
        loss, count, metrics, grads = one(micro, keys[i])
        add = lambda a, x: a + count * x  # noqa: E731
        return (acc[0] + count * loss, acc[1] + count, jax.tree.map(add, acc[2], metrics),
                jax.tree.map(add, acc[3], grads)), None

    shapes = jax.eval_shape(one, jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else x[0], micro_batches), keys[0])
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), tree)  # noqa: E731
    init = (jnp.zeros(()), jnp.zeros(()), zeros(shapes[2]), zeros(shapes[3]))
    (loss_sum, count, metrics, grads), _ = jax.lax.scan(body, init, jnp.arange(accum_steps))
    denom = jnp.maximum(count, 1.0)
    scale = lambda tree: jax.tree.map(lambda x: x / denom, tree)  # noqa: E731
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, params)
    return loss_sum / denom, count, scale(metrics), grads


def apply_update(state: TrainState, batch, frozen, loss_fn: LossFn, config):
    """One optimizer step (traceable: `minibatch_update` scans it inside its own jit)."""
    rng, step_rng = jax.random.split(state.rng)
    loss, count, metrics, grads = weighted_grads(state.params, batch, frozen, step_rng, loss_fn, config,
                                                 state.accum_steps)
    # The optimizer's `apply_if_finite` judges the gradient; a non-finite loss with a finite gradient (possible
    # when the loss's bad term has no gradient path) is made to fail that check too.
    checked = jax.tree.map(lambda g: jnp.where(jnp.isfinite(loss), g, jnp.nan), grads)
    updates, opt_state = state.tx.update(checked, state.opt_state, state.params)
    new_state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                              step=state.step + 1, rng=rng)
    out = dict(metrics)
    out["loss"] = loss
    out["loss/count"] = count
    out["optim/grad_norm"] = optax.global_norm(grads)  # before clipping
    out["optim/step_skipped"] = 1.0 - opt_state.last_finite.astype(jnp.float32)
    out["optim/consecutive_nonfinite"] = opt_state.notfinite_count
    lr = learning_rate_of(opt_state)
    if lr is not None:
        out["optim/learning_rate"] = lr
    return new_state, out


_update = jax.jit(apply_update, static_argnames=("loss_fn", "config"), donate_argnames=("state",))


def update(state: TrainState, batch, loss_fn: LossFn, frozen: Any = None, config: Any = None):
    """One optimizer step. `loss_fn`/`config` are static (config must be hashable or a ConfigDict).

    Pass the same `loss_fn` object every step (a module-level function, or one partial built
    once): jit caches on its identity, so a fresh lambda per step recompiles every step.
    `state` is donated: use the returned state, not the argument.
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.FrozenConfigDict(config)
    return _update(state, batch, frozen, loss_fn=loss_fn, config=config)


UPDATE_STEP_KEY = "update_step_B"  # added to each minibatch of a dict batch by `minibatch_update`


def minibatch_indices(rng, batch_size: int, epochs: int, num_minibatches: int, shuffle: bool = True):
    """(epochs·num_minibatches, batch_size // num_minibatches) row indices: a fresh permutation per
    epoch, or the rows in order (`shuffle=False`: minibatch i is rows [i·m, (i+1)·m))."""
    if shuffle:
        perms = jax.vmap(lambda k: jax.random.permutation(k, batch_size))(jax.random.split(rng, epochs))
    else:
        perms = jnp.tile(jnp.arange(batch_size), (epochs, 1))
    return perms.reshape(epochs * num_minibatches, batch_size // num_minibatches)


@functools.partial(jax.jit, static_argnames=("loss_fn", "config", "epochs", "num_minibatches", "shuffle"),
                   donate_argnames=("state",))
def minibatch_update(state: TrainState, batch, frozen, rng, *, loss_fn: LossFn, config, epochs: int = 1,
                     num_minibatches: int = 1, shuffle: bool = True):
    """`epochs` passes over `batch` in `num_minibatches` minibatches, one optimizer step each, all in
    ONE jit (`lax.scan` of `apply_update`) → (state, metrics stacked over the E·M steps). Every
    array leaf of `batch` has the rows on its leading axis; `frozen` (e.g. reference params) is
    shared by every step. PPO, RLOO/GRPO and SuperHF run their updates through it. A dict batch's
    minibatches also carry `update_step_B` (the step's index 0 … E·M−1 on every row): step 0 is the one
    whose params are still the rollout policy's."""
    B = jax.tree.leaves(batch)[0].shape[0]
    if num_minibatches < 1 or B % num_minibatches:
        raise ValueError(f"batch of {B} rows is not divisible by num_minibatches={num_minibatches}")
    idx = minibatch_indices(rng, B, epochs, num_minibatches, shuffle)

    def step(state, step_idx):
        i, idx_M = step_idx
        minibatch = jax.tree.map(lambda x: x[idx_M], batch)
        if isinstance(minibatch, dict):  # which of the E·M steps this is, per row (so micro-batches split it)
            minibatch = {**minibatch, UPDATE_STEP_KEY: jnp.full(idx_M.shape, i, jnp.int32)}
        return apply_update(state, minibatch, frozen, loss_fn, config)

    return jax.lax.scan(step, state, (jnp.arange(idx.shape[0], dtype=jnp.int32), idx))


def check_nonfinite(state: TrainState, max_consecutive: int) -> None:
    """Host-side guard (one scalar fetch): raise after `max_consecutive` skipped steps in a row."""
    count = int(jax.device_get(state.nonfinite_count))
    if max_consecutive > 0 and count >= max_consecutive:
        raise NonFiniteError(
            f"{count} consecutive steps had a non-finite loss or gradient (limit "
            f"optim.max_consecutive_nonfinite={max_consecutive}) at step {int(state.step)}",
            "those steps were not applied, so params and the last checkpoint are the last good ones; lower the "
            "learning rate, check the data, or run with JAX_DEBUG_NANS=1 to find the source")
