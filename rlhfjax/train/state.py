"""`TrainState`: everything that changes during training and must survive a restart."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    step: jax.Array  # int32: update calls made (= optimizer steps, skipped ones included)
    rng: jax.Array  # raw uint32[2] key; split once per step so resume replays the same keys
    nonfinite_count: jax.Array  # int32: consecutive steps skipped for NaN/Inf loss or grads
    # Static: the optimizer and its LR schedule (functions, not checkpointed).
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    schedule: Any = flax.struct.field(pytree_node=False, default=None)
    # Micro-batches each update splits its batch into (exact weighted accumulation, train.update).
    accum_steps: int = flax.struct.field(pytree_node=False, default=1)

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array, schedule=None, accum_steps: int = 1):
        return cls(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                   rng=jnp.asarray(rng, jnp.uint32), nonfinite_count=jnp.zeros((), jnp.int32),
                   tx=tx, schedule=schedule, accum_steps=int(accum_steps))


def create_on_mesh(params, param_shardings, optim, rng, mesh) -> TrainState:
    """A run's TrainState with every leaf on `mesh`, from its optim config (`train.optim`; total_steps
    already resolved): params as given (donated: don't reuse the argument), Adam moments sharded like
    their params, counters and key replicated, `optim.grad_accum_steps` micro-batches per update. One
    jit with out_shardings, so the optimizer state is born sharded."""
    from rlhfjax import parallel
    from rlhfjax.train.optim import make_optimizer, make_schedule

    tx, schedule, accum = make_optimizer(optim), make_schedule(optim), int(optim.grad_accum_steps)
    rep = parallel.replicated(mesh)
    shardings = TrainState(params=param_shardings,
                           opt_state=parallel.opt_state_shardings(tx, params, param_shardings, mesh),
                           step=rep, rng=rep, nonfinite_count=rep, tx=tx, schedule=schedule, accum_steps=accum)
    create = lambda p, r: TrainState.create(p, tx, r, schedule=schedule, accum_steps=accum)  # noqa: E731
    with parallel.activate(mesh):
        return jax.jit(create, out_shardings=shardings, donate_argnums=0)(params, rng)
