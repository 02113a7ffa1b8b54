"""SimPO: simple preference optimisation with a reference-free, length-normalised reward, as one pure `loss_fn`.

Meng, Xia & Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", §2: the implicit
reward of a response is its average token log-prob under the policy, scaled by β (Eq. 4),

    r(x, y) = β/|y| · log π(y|x) = β/|y| · Σ_t log π(y_t|x, y_<t),

and the loss is Bradley–Terry with a target reward margin γ > 0 (Eqs. 5-6), per pair (x, y_w, y_l):

    L = −log σ(r(x, y_w) − r(x, y_l) − γ).

No reference model: the policy's own log-probs are the only model call (`models.api.response_logp`, temperature
1), so nothing is precomputed and no reference is kept on the device. At equal rewards L = −log σ(−γ).

γ is set through γ/β (`gamma_beta_ratio`), as the authors' reference code does now ("normalised and easier to
tune under different β"); its `simpo_loss` computes the same −log σ(β(Δ_mean − γ/β)). Defaults: β = 2.0 (the
paper's Base settings and the code's default; 2.5 for the Instruct ones) and γ/β = 0.5 (the code README's
recommended start and its Llama3-Base setting, so γ = 1.0; Mistral-Base used 0.8, the code's default is 0.25).

`loss_fn` returns `(total, count, metrics)`: count = pairs that count (real rows whose chosen and rejected
responses each have at least one token), total = Σ per-pair loss over them; a pair with an empty response
weighs nothing. Metrics are means over those pairs:

    simpo/loss              per-pair loss              simpo/accuracy     r_w > r_l (ties 0.5)
    simpo/margin            r_w − r_l (before γ)       simpo/reward_chosen, simpo/reward_rejected
    simpo/logp_chosen       mean token log-prob of y_w, and simpo/logp_rejected
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig
from rlhfjax.objectives import pairwise as P


@dataclasses.dataclass(frozen=True)
class SimPOLossConfig:
    model: ModelConfig  # the policy's architecture
    beta: float = 2.0  # Meng et al. 2024: 2.0 (Base), 2.5 (Instruct); the reference code's default 2.0
    gamma_beta_ratio: float = 0.5  # γ/β; the reference code README's starting point (Llama3-Base: 0.5)

    def __post_init__(self):
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"simpo.beta={self.beta} must be a finite number > 0", "Meng et al. use 2.0-2.5")
        if not (self.gamma_beta_ratio >= 0 and math.isfinite(self.gamma_beta_ratio)):
            raise ConfigError(f"simpo.gamma_beta_ratio={self.gamma_beta_ratio} must be a finite number >= 0",
                              "the target margin γ = gamma_beta_ratio·β; the SimPO code suggests 0.5")

    @property
    def gamma(self) -> float:
        return self.gamma_beta_ratio * self.beta


def simpo_loss(reward_chosen_B, reward_rejected_B, gamma: float):
    """−log σ(r_w − r_l − γ) per pair."""
    return P.bradley_terry(reward_chosen_B - gamma, reward_rejected_B)


def pair_terms(params, batch, config: SimPOLossConfig) -> dict:
    """Per pair (`*_B`): mean token log-probs of both responses (one 2B forward), rewards, `valid_B`."""
    # Rows that do not count get rewards 0 (finite whatever their inputs).
    logp_c, logp_r, valid_B = P.mean_pair_logps(params, batch, config.model, fill=0.0)
    return {"valid_B": valid_B, "logp_chosen_B": logp_c, "logp_rejected_B": logp_r,
            "reward_chosen_B": config.beta * logp_c, "reward_rejected_B": config.beta * logp_r,
            "margin_B": config.beta * (logp_c - logp_r)}


def pair_metrics(terms: dict, prefix: str = "simpo/") -> dict:
    """Means over the pairs that count (module docstring); `prefix` names them (eval: "eval/simpo/")."""
    valid = terms["valid_B"]
    mean = lambda x: jnp.sum(jnp.where(valid > 0, x, 0.0)) / jnp.maximum(valid.sum(), 1.0)  # noqa: E731
    r_c, r_r = terms["reward_chosen_B"], terms["reward_rejected_B"]
    return {f"{prefix}loss": mean(terms["loss_B"]), f"{prefix}accuracy": mean(P.pair_accuracy(r_c, r_r)),
            f"{prefix}margin": mean(terms["margin_B"]), f"{prefix}reward_chosen": mean(r_c),
            f"{prefix}reward_rejected": mean(r_r), f"{prefix}logp_chosen": mean(terms["logp_chosen_B"]),
            f"{prefix}logp_rejected": mean(terms["logp_rejected_B"])}


def eval_rows(params, batch, frozen, loss_config: SimPOLossConfig) -> dict:
    """Per-pair terms and loss of an eval batch: what `pair_metrics` summarises (`frozen` is unused)."""
    del frozen
    terms = pair_terms(params, batch, loss_config)
    return {**terms, "loss_B": simpo_loss(terms["reward_chosen_B"], terms["reward_rejected_B"], loss_config.gamma)}


def loss_fn(params, batch, *, frozen, config: SimPOLossConfig, rng):
    """(Σ per-pair loss, pairs that count, metrics) for a `collate_pairs` batch; no reference (`frozen` unused)."""
    del rng
    rows = eval_rows(params, batch, frozen, config)
    valid = rows["valid_B"]
    return jnp.sum(jnp.where(valid > 0, rows["loss_B"], 0.0)), valid.sum(), pair_metrics(rows)
