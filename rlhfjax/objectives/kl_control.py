"""KL-penalty coefficient controllers (Ziegler et al. 2019, §2.2; lm-human-preferences).

Pure pytrees: the coefficient is a float32 leaf, so it lives inside jit and in checkpoints; the
hyperparameters are static fields. Both expose `update(observed_kl, n_steps) -> new state`, where
`observed_kl` is the batch mean of the *sequence* KL that was penalised (`ShapedRewards.kl_seq_B`
mean, logged as `kl/seq_mean`) and `n_steps` the number of episodes it was measured on
(lm-human-preferences passes the rollout batch size).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from rlhfjax.choices import KL_CONTROLLERS as CONTROLLERS  # config.kl.controller
from rlhfjax.errors import ConfigError


@flax.struct.dataclass
class FixedKL:
    coef: jax.Array

    @classmethod
    def create(cls, coef: float) -> FixedKL:
        return cls(coef=jnp.asarray(coef, jnp.float32))

    def update(self, observed_kl, n_steps) -> FixedKL:
        del observed_kl, n_steps
        return self


@flax.struct.dataclass
class AdaptiveKL:
    """β ← β·(1 + clip(KL/target − 1, ±0.2)·n_steps/horizon): a proportional controller on log β.

    Defaults are lm-human-preferences' (Ziegler et al. 2019): initial β 0.15, target 6 nats,
    horizon 10,000 episodes. The ±0.2 clip bounds each step's relative change to 0.2·n_steps/horizon.
    """

    coef: jax.Array
    target: float = flax.struct.field(pytree_node=False, default=6.0)
    horizon: float = flax.struct.field(pytree_node=False, default=10_000.0)

    @classmethod
    def create(cls, init_coef: float = 0.15, target: float = 6.0, horizon: float = 10_000.0) -> AdaptiveKL:
        if not (target > 0 and horizon > 0):
            raise ConfigError(f"AdaptiveKL needs target > 0 and horizon > 0, got {target}, {horizon}")
        return cls(coef=jnp.asarray(init_coef, jnp.float32), target=float(target), horizon=float(horizon))

    def update(self, observed_kl, n_steps) -> AdaptiveKL:
        error = jnp.clip(jnp.asarray(observed_kl, jnp.float32) / self.target - 1.0, -0.2, 0.2)
        return self.replace(coef=self.coef * (1.0 + error * n_steps / self.horizon))


KLController = FixedKL | AdaptiveKL


def update(state: KLController, observed_kl, n_steps) -> KLController:
    """Functional form of `state.update(observed_kl, n_steps)`."""
    return state.update(observed_kl, n_steps)
