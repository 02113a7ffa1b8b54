"""ORPO: odds-ratio preference optimisation, an SFT loss plus a reference-free odds-ratio penalty, as one pure
`loss_fn`.

Hong, Lee & Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model". With the
length-normalised likelihood of a response (its preliminaries) and its odds (Eq. 4),

    log P(y|x) = 1/|y| · Σ_t log π(y_t|x, y_<t),        odds(y|x) = P(y|x) / (1 − P(y|x)),

the loss per pair (x, y_w, y_l) is (Eqs. 6-7)

    L = L_SFT + λ · L_OR,    L_SFT = −1/|y_w| · Σ_t log π(y_w,t|x, y_w,<t)   (the chosen response's NLL),
                             L_OR = −log σ(log odds(y_w|x) − log odds(y_l|x)),

with log odds(y|x) = m − log(1 − eᵐ), m the mean token log-prob, computed by `log1mexp` (accurate both near
m = 0 and far below it). No reference model: the policy's own log-probs (`models.api.response_logp`,
temperature 1) are the only model call. At equal mean log-probs L_OR = log 2, so L = L_SFT + λ·log 2.

L_SFT here is the paper's: each chosen response's token-mean NLL, averaged over pairs. TRL's `ORPOTrainer`
instead averages the NLL over every chosen token of the batch pooled (long responses weigh more) and over the
prompt's tokens too; the authors' code takes the LM loss of prompt + response (pooled over the batch) unless
prompt tokens are masked. The odds term is the same in all three.

λ = 0.1 by default: the authors' Mistral-ORPO-β script (`--alpha 0.1`; their code's argument default is 1.0).
A mean log-prob above −1e-6 (P within 1e-6 of 1) is capped there, so the odds and their gradient stay finite.

`loss_fn` returns `(total, count, metrics)`: count = pairs that count (real rows whose chosen and rejected
responses each have at least one token), total = Σ per-pair loss over them; a pair with an empty response
weighs nothing. Metrics are means over those pairs:

    orpo/loss        L per pair                          orpo/nll      L_SFT
    orpo/or          L_OR (the odds-ratio term, unweighted)
    orpo/margin      log odds(y_w) − log odds(y_l)       orpo/accuracy  log odds(y_w) > log odds(y_l) (ties 0.5)
    orpo/logp_chosen mean token log-prob of y_w, and orpo/logp_rejected
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig
from rlhfjax.objectives import pairwise as P

MAX_MEAN_LOGP = -1e-6  # caps P(y|x) just below 1: the odds are infinite at P = 1


@dataclasses.dataclass(frozen=True)
class ORPOLossConfig:
    model: ModelConfig  # the policy's architecture
    odds_ratio_weight: float = 0.1  # λ (Hong et al. 2024, Eq. 6); their Mistral-ORPO-β script uses 0.1

    def __post_init__(self):
        lam = self.odds_ratio_weight
        if not (lam >= 0 and math.isfinite(lam)):
            raise ConfigError(f"orpo.odds_ratio_weight={lam} must be a finite number >= 0",
                              "it is ORPO's λ; Hong et al. use 0.1")


def log1mexp(x):
    """log(1 − eˣ) for x < 0: log(−expm1 x) near 0, log1p(−eˣ) below −log 2 (M. Mächler 2012, "Accurately
    Computing log(1 − exp(−|a|))"); each branch sees only inputs where it is finite, so gradients are too."""
    near = x > -math.log(2)
    return jnp.where(near, jnp.log(-jnp.expm1(jnp.minimum(x, MAX_MEAN_LOGP))),
                     jnp.log1p(-jnp.exp(jnp.minimum(x, -math.log(2)))))


def log_odds(mean_logp):
    """log odds(y|x) = log P − log(1 − P) from the mean token log-prob log P (capped at `MAX_MEAN_LOGP`)."""
    m = jnp.minimum(mean_logp, MAX_MEAN_LOGP)
    return m - log1mexp(m)


def pair_terms(params, batch, config: ORPOLossConfig) -> dict:
    """Per pair (`*_B`): mean token log-probs of both responses (one 2B forward), the two terms, `valid_B`."""
    # Rows that do not count get mean log-probs −1 (finite odds whatever their inputs).
    logp_c, logp_r, valid_B = P.mean_pair_logps(params, batch, config.model, fill=-1.0)
    odds_c, odds_r = log_odds(logp_c), log_odds(logp_r)
    nll_B, or_B = -logp_c, P.bradley_terry(odds_c, odds_r)
    return {"valid_B": valid_B, "logp_chosen_B": logp_c, "logp_rejected_B": logp_r, "log_odds_chosen_B": odds_c,
            "log_odds_rejected_B": odds_r, "margin_B": odds_c - odds_r, "nll_B": nll_B, "or_B": or_B,
            "loss_B": nll_B + config.odds_ratio_weight * or_B}


def pair_metrics(terms: dict, prefix: str = "orpo/") -> dict:
    """Means over the pairs that count (module docstring); `prefix` names them (eval: "eval/orpo/")."""
    valid = terms["valid_B"]
    mean = lambda x: jnp.sum(jnp.where(valid > 0, x, 0.0)) / jnp.maximum(valid.sum(), 1.0)  # noqa: E731
    accuracy = P.pair_accuracy(terms["log_odds_chosen_B"], terms["log_odds_rejected_B"])
    return {f"{prefix}loss": mean(terms["loss_B"]), f"{prefix}nll": mean(terms["nll_B"]),
            f"{prefix}or": mean(terms["or_B"]), f"{prefix}margin": mean(terms["margin_B"]),
            f"{prefix}accuracy": mean(accuracy), f"{prefix}logp_chosen": mean(terms["logp_chosen_B"]),
            f"{prefix}logp_rejected": mean(terms["logp_rejected_B"])}


def eval_rows(params, batch, frozen, loss_config: ORPOLossConfig) -> dict:
    """Per-pair terms and loss of an eval batch: what `pair_metrics` summarises (`frozen` is unused)."""
    del frozen
    return pair_terms(params, batch, loss_config)


def loss_fn(params, batch, *, frozen, config: ORPOLossConfig, rng):
    """(Σ per-pair loss, pairs that count, metrics) for a `collate_pairs` batch; no reference (`frozen` unused)."""
    del rng, frozen
    terms = pair_terms(params, batch, config)
    valid = terms["valid_B"]
    return jnp.sum(jnp.where(valid > 0, terms["loss_B"], 0.0)), valid.sum(), pair_metrics(terms)
