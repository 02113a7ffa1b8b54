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
    # Static: the optimizer (functions, not checkpointed); always `optax.apply_if_finite` outermost.
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    # Micro-batches each update splits its batch into (exact weighted accumulation, train.update).
    accum_steps: int = flax.struct.field(pytree_node=False, default=1)

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array, accum_steps: int = 1):
        """`tx` from `train.make_optimizer` is guarded against non-finite steps already; any other is wrapped in
        `optax.apply_if_finite` here (a new object each call: a custom optimizer's update compiles per state)."""
        opt_state = tx.init(params)
        if not isinstance(opt_state, optax.ApplyIfFiniteState):
            tx = finite_steps_only(tx)
            opt_state = tx.init(params)
        return cls(params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32),
                   rng=jnp.asarray(rng, jnp.uint32), tx=tx, accum_steps=int(accum_steps))

    @property
    def nonfinite_count(self) -> jax.Array:
        """Consecutive steps skipped for a non-finite loss or gradient (int32; `optax.apply_if_finite`'s count)."""
        return self.opt_state.notfinite_count


def finite_steps_only(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` behind `optax.apply_if_finite`: a step whose gradient (or loss: `train.update` makes its gradient
    NaN then) is not finite changes neither params nor optimizer state, and is counted. The wrapper's own
    "apply anyway after k errors" is never reached: the loop stops the run first
    (`optim.max_consecutive_nonfinite`, `train.update.check_nonfinite`)."""
    return optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)


def create_on_mesh(params, param_shardings, optim, rng, mesh) -> TrainState:
    """A run's TrainState with every leaf on `mesh`, from its optim config (`train.optim`; total_steps
    already resolved): params as given (donated: don't reuse the argument), Adam moments sharded like
    their params, counters and key replicated, `optim.grad_accum_steps` micro-batches per update. One
    jit with out_shardings, so the optimizer state is born sharded."""
    from rlhfjax import parallel
    from rlhfjax.train.optim import make_optimizer

    tx, accum = make_optimizer(optim), int(optim.grad_accum_steps)
    rep = parallel.replicated(mesh)
    shardings = TrainState(params=param_shardings,
                           opt_state=parallel.opt_state_shardings(tx, params, param_shardings, mesh),
                           step=rep, rng=rep, tx=tx, accum_steps=accum)
    create = lambda p, r: TrainState.create(p, tx, r, accum_steps=accum)  # noqa: E731
    with parallel.activate(mesh):
        return jax.jit(create, out_shardings=shardings, donate_argnums=0)(params, rng)
