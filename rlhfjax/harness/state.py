"""`PolicyState`: what a run that trains a policy checkpoints, online (PPO, SuperHF, RLOO/GRPO, ...) or offline
against a frozen reference (DPO, ...): one pytree, so a resumed run has everything but its data position."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from rlhfjax import parallel
from rlhfjax.train import TrainState
from rlhfjax.train.optim import with_total_steps
from rlhfjax.train.state import create_on_mesh


@flax.struct.dataclass
class PolicyState:
    train: TrainState  # params {"policy": ..., and e.g. "value"} online; the policy's params offline
    method: Any  # the method's own state (PPO: its KL controller); () when it has none
    # The proxy reward's normaliser, score = gain · raw + bias (identity until fitted): fitted once on the initial
    # policy's samples before the first step, then carried here, so a resumed run uses the same one.
    reward_gain: jax.Array
    reward_bias: jax.Array
    iteration: jax.Array  # int32: iterations completed (online) or optimizer steps (offline)


def create(config, mesh, params, shardings, *, total_steps: int, rng, method_state: Any = ()) -> PolicyState:
    """A fresh `PolicyState` with trainable `params` (placed, sharded like `shardings`, donated): the TrainState
    (`train.state.create_on_mesh`, its schedule over `total_steps` optimizer steps when `optim.total_steps` is 0),
    the normaliser at identity, step 0."""
    train = create_on_mesh(params, shardings, with_total_steps(config.optim, total_steps), rng, mesh)
    state = PolicyState(train=train, method=method_state, reward_gain=jnp.ones((), jnp.float32),
                        reward_bias=jnp.zeros((), jnp.float32), iteration=jnp.zeros((), jnp.int32))
    return parallel.replicate_rest(state, mesh)


def with_normaliser(state: PolicyState, gain, bias, mesh) -> PolicyState:
    return parallel.replicate_rest(state.replace(reward_gain=jnp.asarray(gain, jnp.float32),
                                                 reward_bias=jnp.asarray(bias, jnp.float32)), mesh)
