"""The one jitted update every objective uses.

`loss_fn(params, batch, *, frozen, config, rng) -> (loss, metrics)`; the update takes its grads,
runs the optax chain, and skips the step (params and optimizer state unchanged) when the loss or
any gradient is not finite, counting consecutive skips in the state. The host raises
`NonFiniteError` via `check_nonfinite` once the count reaches the configured limit.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rlhfjax.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


class NonFiniteError(RuntimeError):
    pass


def _tree_all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def _optimizer_count(opt_state) -> jax.Array:
    """Optimizer updates applied so far (the schedule's step; MultiSteps' inner count included)."""
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return found[0][1] if found else jnp.zeros((), jnp.int32)


@functools.partial(jax.jit, static_argnames=("loss_fn", "config"), donate_argnames=("state",))
def _update(state: TrainState, batch, frozen, loss_fn: LossFn, config):
    rng, step_rng = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, frozen=frozen, config=config,
                                                   rng=step_rng), has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, batch)
    finite = jnp.isfinite(loss) & _tree_all_finite(grads)
    # Zero bad grads before the chain so no NaN reaches the (discarded) new optimizer state math.
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
    updates, new_opt_state = state.tx.update(safe_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = state.replace(
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        step=state.step + 1,
        rng=rng,
        nonfinite_count=jnp.where(finite, 0, state.nonfinite_count + 1).astype(jnp.int32),
    )
    out = dict(metrics)
    out["loss"] = loss
    out["optim/grad_norm"] = optax.global_norm(grads)  # before clipping
    out["optim/step_skipped"] = (~finite).astype(jnp.float32)
    out["optim/consecutive_nonfinite"] = new_state.nonfinite_count
    if state.schedule is not None:
        out["optim/learning_rate"] = state.schedule(_optimizer_count(state.opt_state))
    return new_state, out


def update(state: TrainState, batch, loss_fn: LossFn, frozen: Any = None, config: Any = None):
    """One optimizer step. `loss_fn`/`config` are static (config must be hashable or a ConfigDict).

    Pass the same `loss_fn` object every step (a module-level function, or one partial built
    once): jit caches on its identity, so a fresh lambda per step recompiles every step.
    `state` is donated: use the returned state, not the argument.
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.FrozenConfigDict(config)
    return _update(state, batch, frozen, loss_fn=loss_fn, config=config)


def check_nonfinite(state: TrainState, max_consecutive: int) -> None:
    """Host-side guard (one scalar fetch): raise after `max_consecutive` skipped steps in a row."""
    count = int(jax.device_get(state.nonfinite_count))
    if max_consecutive > 0 and count >= max_consecutive:
        raise NonFiniteError(
            f"{count} consecutive steps had a non-finite loss or gradient (limit "
            f"max_consecutive_nonfinite={max_consecutive}) at step {int(state.step)}; those steps "
            "were not applied, so params and the last checkpoint are the last good ones. Lower "
            "the learning rate, check the data, or run with jax_debug_nans to find the source.")
