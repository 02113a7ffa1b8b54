"""Direct preference objectives: DPO, IPO and conservative DPO, as one pure `loss_fn` over pairs batches.

The policy π is trained straight on comparisons (prompt x, chosen y_c, rejected y_r) against a frozen
reference π_ref (the SFT policy), with no reward model and no sampling. Everything is built on

    Δ = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_r|x) − log π_ref(y_r|x)]

with log π(y|x) the log-prob of the response *summed* over its tokens (`models.api.response_logp`, at
temperature 1). The implicit reward of a response is r = β·(log π − log π_ref) (Rafailov et al. 2023,
eq. 5, without the prompt-only log Z term, which cancels in every pair), so βΔ = r_c − r_r.

`config.loss` picks the per-pair loss:
- "dpo"  −log σ(βΔ) (Rafailov et al. 2023, eq. 7): Bradley–Terry on the implicit rewards,
         `pairwise.bradley_terry(r_c, r_r)`; log 2 at Δ = 0.
- "ipo"  (Δ − 1/(2β))² (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
         Human Preferences", eq. 17 with τ = β): a squared loss that pulls Δ to a finite target instead of
         pushing it to infinity, so it does not overfit deterministic preferences; 1/(4β²) at Δ = 0.
         `config.ipo_normalise` says what Δ is made of: "sum" (default) the summed log-ratios, as the
         paper's Eq. 17 writes it; "mean" each response's log-ratio divided by its token count, what the
         authors' experiments and TRL's `ipo` loss use. The per-token form shrinks Δ by about the response
         length, so the same β pulls Δ to the same target 1/(2β) on a very different scale.
- "cdpo" conservative DPO: labels flipped with probability ε = `config.label_smoothing`,
         (1 − ε)·(−log σ(βΔ)) + ε·(−log σ(−βΔ)) (E. Mitchell, "A note on DPO with noisy preferences
         & relationship to IPO", 2023; the DPO reference code's `label_smoothing`); its optimum is a
         finite Δ with σ(βΔ) = 1 − ε, so noisy labels cannot push margins without bound.

Reference log-probs: either carried by the batch (`ref_chosen_logp_B`, `ref_rejected_logp_B`: the
column precomputed once per dataset by the recipe, `config.reference_on_the_fly=False`), or computed
here from the reference params passed as `frozen` (`reference_on_the_fly=True`). Either way they are
constants of the loss (no gradient).

`loss_fn` returns `(total, count, metrics)` (the `train.update` contract): count = pairs that count
(real rows whose chosen and rejected responses each have at least one token), total = Σ per-pair loss
over them; a pair with an empty response (e.g. after truncation) weighs nothing instead of poisoning
the batch. Metrics are means over those pairs (exact under gradient accumulation, whose micro-batch
metrics are weighted by count):

    dpo/loss                  per-pair loss                dpo/accuracy   implicit reward accuracy
    dpo/margin                r_c − r_r = βΔ               (r_c > r_r: 1, tie: 0.5)
    dpo/reward_chosen         r_c = β(log π − log π_ref)(y_c), and dpo/reward_rejected
    dpo/logp_drift_chosen     log π(y_c) − log π_ref(y_c) (summed over the response), and
    dpo/logp_drift_rejected   the same for y_r: DPO's known failure shows as a *falling* chosen
                              log-prob (drift_chosen < 0) while the margin still grows
    dpo/logp_chosen           log π(y_c) summed over the response, and dpo/logp_rejected
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.choices import DPO_LOSSES as LOSSES, IPO_NORMALISE
from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig
from rlhfjax.objectives import pairwise as P

REF_KEYS = ("ref_chosen_logp_B", "ref_rejected_logp_B")  # the precomputed reference column, per pair


@dataclasses.dataclass(frozen=True)
class DPOLossConfig:
    model: ModelConfig  # the policy's (and reference's) architecture
    loss: str = "dpo"  # dpo | ipo | cdpo
    beta: float = 0.1  # Rafailov et al. 2023: β = 0.1 (0.5 for summarisation); IPO's τ
    label_smoothing: float = 0.0  # cdpo's ε, the assumed probability that a label is flipped
    reference_on_the_fly: bool = False  # True: `frozen` = reference params; False: the batch's REF_KEYS
    ipo_normalise: str = "sum"  # IPO_NORMALISE: Δ of summed (Azar et al., Eq. 17) or per-token mean log-ratios

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"dpo.loss={self.loss!r} is not one of the choices", f"use one of: {', '.join(LOSSES)}")
        if not self.beta > 0:
            raise ConfigError(f"dpo.beta={self.beta} must be > 0", "Rafailov et al. use 0.1")
        eps = self.label_smoothing
        if self.loss == "cdpo" and not 0 < eps < 0.5:
            raise ConfigError(f"dpo.loss='cdpo' needs dpo.label_smoothing in (0, 0.5), got {eps}",
                              "set the assumed label-flip rate, e.g. --config.dpo.label_smoothing=0.1")
        if self.ipo_normalise not in IPO_NORMALISE:
            raise ConfigError(f"dpo.ipo_normalise={self.ipo_normalise!r} is not one of the choices",
                              f"use one of: {', '.join(IPO_NORMALISE)}")
        if self.ipo_normalise != "sum" and self.loss != "ipo":
            raise ConfigError(f"dpo.ipo_normalise={self.ipo_normalise!r} only applies to dpo.loss='ipo'",
                              "use --config.dpo.loss=ipo, or leave dpo.ipo_normalise=sum")
        if self.loss != "cdpo" and eps != 0:
            raise ConfigError(f"dpo.label_smoothing={eps} is conservative DPO's ε but dpo.loss={self.loss!r}",
                              "use --config.dpo.loss=cdpo, or set dpo.label_smoothing=0")


# --------------------------------------------------------------------------------------------
# The per-pair losses (pure math on Δ; tests compare them with numpy)


def dpo_loss(delta_B, beta: float):
    """−log σ(βΔ) per pair (Bradley–Terry on the implicit rewards βΔ)."""
    return P.bradley_terry(beta * delta_B, jnp.zeros_like(delta_B))


def cdpo_loss(delta_B, beta: float, label_smoothing: float):
    """(1 − ε)·(−log σ(βΔ)) + ε·(−log σ(−βΔ)) per pair."""
    return (1.0 - label_smoothing) * dpo_loss(delta_B, beta) + label_smoothing * dpo_loss(-delta_B, beta)


def ipo_loss(delta_B, beta: float):
    """(Δ − 1/(2β))² per pair."""
    return jnp.square(delta_B - 1.0 / (2.0 * beta))


def per_pair_loss(delta_B, config: DPOLossConfig):
    if config.loss == "dpo":
        return dpo_loss(delta_B, config.beta)
    if config.loss == "ipo":
        return ipo_loss(delta_B, config.beta)
    return cdpo_loss(delta_B, config.beta, config.label_smoothing)


# --------------------------------------------------------------------------------------------
# Log-probs of a pairs batch


def pair_logps(params, batch, model_cfg: ModelConfig):
    """Summed response log-probs of a `collate_pairs` batch in one 2B forward →
    (logp_chosen_B, logp_rejected_B, count_chosen_B, count_rejected_B)."""
    return P.pair_response_logps(params, batch, model_cfg)


def reference_logps(ref_params, batch, model_cfg: ModelConfig):
    """(ref_chosen_logp_B, ref_rejected_logp_B): what the precomputed column holds for these pairs."""
    s_c, s_r, _, _ = pair_logps(ref_params, batch, model_cfg)
    return s_c, s_r


def reference_column(ref_params, batch, model_cfg: ModelConfig) -> dict:
    """`reference_logps` by the batch keys the loss reads them from (`REF_KEYS`)."""
    return dict(zip(REF_KEYS, reference_logps(ref_params, batch, model_cfg)))


def pair_terms(params, batch, *, frozen, config: DPOLossConfig):
    """Everything the loss and its metrics need, per pair: dict of `*_B` arrays (`valid_B`: the pair counts)."""
    logp_c, logp_r, n_c, n_r = pair_logps(params, batch, config.model)
    if config.reference_on_the_fly:
        if frozen is None:
            raise ValueError("reference_on_the_fly=True needs the reference params as `frozen`")
        ref_c, ref_r = reference_logps(frozen, batch, config.model)
    else:
        if not all(k in batch for k in REF_KEYS):
            raise ValueError(f"the batch carries no precomputed reference log-probs {REF_KEYS} "
                             "(or set reference_on_the_fly and pass the reference params as `frozen`)")
        ref_c, ref_r = batch[REF_KEYS[0]], batch[REF_KEYS[1]]
    ref_c, ref_r = jax.lax.stop_gradient(ref_c), jax.lax.stop_gradient(ref_r)
    valid = batch["row_mask_B"].astype(jnp.float32) * (n_c > 0) * (n_r > 0)
    drift_c, drift_r = logp_c - ref_c, logp_r - ref_r
    if config.ipo_normalise == "mean":  # IPO on per-token log-ratios (the drift metrics stay summed)
        delta = drift_c / jnp.maximum(n_c, 1) - drift_r / jnp.maximum(n_r, 1)
    else:
        delta = drift_c - drift_r
    # Rows that do not count get Δ = 0 (finite whatever their inputs: padding rows hold no tokens).
    delta = jnp.where(valid > 0, delta, 0.0)
    return {"valid_B": valid, "delta_B": delta, "drift_chosen_B": drift_c, "drift_rejected_B": drift_r,
            "logp_chosen_B": logp_c, "logp_rejected_B": logp_r}


def pair_metrics(terms: dict, loss_B, config: DPOLossConfig, prefix: str = "dpo/") -> dict:
    """Means over the pairs that count (module docstring); `prefix` names them (eval: "eval/dpo/")."""
    valid = terms["valid_B"]
    n = jnp.maximum(valid.sum(), 1.0)
    mean = lambda x: jnp.sum(jnp.where(valid > 0, x, 0.0)) / n  # noqa: E731
    r_c, r_r = config.beta * terms["drift_chosen_B"], config.beta * terms["drift_rejected_B"]
    return {f"{prefix}loss": mean(loss_B), f"{prefix}accuracy": mean(P.pair_accuracy(r_c, r_r)),
            f"{prefix}margin": mean(r_c - r_r), f"{prefix}reward_chosen": mean(r_c),
            f"{prefix}reward_rejected": mean(r_r), f"{prefix}logp_drift_chosen": mean(terms["drift_chosen_B"]),
            f"{prefix}logp_drift_rejected": mean(terms["drift_rejected_B"]),
            f"{prefix}logp_chosen": mean(terms["logp_chosen_B"]),
            f"{prefix}logp_rejected": mean(terms["logp_rejected_B"])}


def eval_rows(params, batch, frozen, loss_config: DPOLossConfig) -> dict:
    """Per-pair terms and loss of an eval batch (`pair_terms` and `loss_B`): what `pair_metrics` summarises."""
    terms = pair_terms(params, batch, frozen=frozen, config=loss_config)
    return {**terms, "loss_B": per_pair_loss(terms["delta_B"], loss_config)}


def loss_fn(params, batch, *, frozen, config: DPOLossConfig, rng):
    """(Σ per-pair loss, pairs that count, metrics) for a `collate_pairs` batch (module docstring)."""
    del rng
    terms = pair_terms(params, batch, frozen=frozen, config=config)
    loss_B = per_pair_loss(terms["delta_B"], config)
    valid = terms["valid_B"]
    total = jnp.sum(jnp.where(valid > 0, loss_B, 0.0))
    return total, valid.sum(), pair_metrics(terms, loss_B, config)
