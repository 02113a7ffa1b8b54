"""Kahneman–Tversky Optimisation (KTO; Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic
Optimization", §4.1, the loss of Eq. 7 in the numbering TRL's KTOTrainer cites) as one pure `loss_fn` over
unpaired examples (x, y), each labelled desirable (D) or undesirable (U):

    r(x, y) = log π(y|x) − log π_ref(y|x)                 (summed over the response's tokens)
    z₀ = max(0, mean_i [log π(y'_i|x_i) − log π_ref(y'_i|x_i)])   the reference point, held constant
    v(x, y) = λ_D σ(β(r − z₀)) if y is desirable,  λ_U σ(β(z₀ − r)) if undesirable
    loss = mean over examples of λ_y − v(x, y)         (at π = π_ref: r = z₀ = 0, so λ_y/2 per example)

z₀ is the paper's batch estimate of KL(π ‖ π_ref): prompts x_i scored with unrelated completions y'_i (another
example's, fixed once per dataset by `offline.reference.usable_unpaired`, as TRL fixes them at preprocessing),
averaged over the batch's real rows, clamped at 0 and not back-propagated (§4.1; TRL detaches it too). Under jit
on a sharded batch the mean is over the whole global batch; under gradient accumulation each micro-batch has its
own z₀, as TRL has one per device batch. Defaults: β = 0.1, λ_D = λ_U = 1 (§4.2; it advises λ_D n_D / (λ_U n_U)
in [1, 4/3]: `balance_warning`).

Reference log-probs of (x, y) and (x, y'): the batch's `REF_KEYS` (the column the harness computes once with
`reference_column`) or, with `reference_on_the_fly`, from the reference params passed as `frozen`. `loss_fn` returns
(Σ per-example loss, examples that count, metrics); an example counts when it is a real row whose response and
mismatched completion keep a token. Metrics, means over those examples (per label over that label's;
count-weighted across accumulated micro-batches): kto/loss, kto/z0, kto/kl (before clamping), kto/reward_desirable
and kto/reward_undesirable (β·r), kto/accuracy (sign of r − z₀ agrees with the label, ½ on ties),
kto/desirable_frac, kto/logp (log π(y|x)).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives.core import masked_mean, masked_sum

REF_KEYS = ("ref_logp_B", "ref_kl_logp_B")  # the reference column: log π_ref(y|x) and log π_ref(y'|x)
BALANCE = (1.0, 4 / 3)  # the λ_D n_D / (λ_U n_U) the paper recommends (§4.2)


@dataclasses.dataclass(frozen=True)
class KTOLossConfig:
    model: ModelConfig  # the policy's (and reference's) architecture
    beta: float = 0.1  # Ethayarajh et al. 2024: β = 0.1
    desirable_weight: float = 1.0  # λ_D (the paper's default 1)
    undesirable_weight: float = 1.0  # λ_U (the paper's default 1)
    reference_on_the_fly: bool = False  # True: `frozen` = reference params; False: the batch's REF_KEYS

    def __post_init__(self):
        for name, value in (("beta", self.beta), ("desirable_weight", self.desirable_weight),
                            ("undesirable_weight", self.undesirable_weight)):
            if not value > 0:
                raise ConfigError(f"kto.{name}={value} must be > 0", "the paper uses β = 0.1, λ_D = λ_U = 1")


def balance_warning(n_desirable: int, n_undesirable: int, config: KTOLossConfig) -> str:
    """"" when λ_D n_D / (λ_U n_U) is inside `BALANCE`, else a one-line warning saying what to change."""
    ratio = config.desirable_weight * n_desirable / max(config.undesirable_weight * n_undesirable, 1e-12)
    if BALANCE[0] <= ratio <= BALANCE[1]:
        return ""
    return (f"λ_D n_D / (λ_U n_U) = {ratio:.3g} (n_D={n_desirable}, n_U={n_undesirable}) is outside [1, 4/3], "
            "Ethayarajh et al.'s range: set kto.desirable_weight / kto.undesirable_weight")


def reference_point(kl_B, valid_B):
    """(z₀, the estimate before clamping): the mean of log π(y'|x) − log π_ref(y'|x) over counted rows, constant."""
    kl = jax.lax.stop_gradient(masked_mean(kl_B, valid_B))
    return jnp.maximum(kl, 0.0), kl


def per_example_loss(reward_B, z0, desirable_B, config: KTOLossConfig):
    """λ_y − v(x, y) per example, `reward_B` = r (before β), `desirable_B` 1 or 0."""
    desirable = desirable_B > 0
    lam = jnp.where(desirable, config.desirable_weight, config.undesirable_weight)
    return lam - lam * jax.nn.sigmoid(config.beta * jnp.where(desirable, reward_B - z0, z0 - reward_B))


def _logps(params, batch, model_cfg: ModelConfig, prefix: str = ""):
    rows = (batch[f"{prefix}{k}_BxT"] for k in ("tokens", "mask", "response_mask"))
    return api.response_logp(params, model_cfg, *rows)


def reference_column(ref_params, batch, model_cfg: ModelConfig) -> dict:
    """{REF_KEYS: B arrays}: the reference's summed log-probs of (x, y) and (x, y'), batched as the policy's are
    (so at π = π_ref they agree to the bit and r = 0 exactly)."""
    return {key: _logps(ref_params, batch, model_cfg, prefix)[0] for key, prefix in zip(REF_KEYS, ("", "kl_"))}


def example_terms(params, batch, frozen, loss_config: KTOLossConfig) -> dict:
    """Per example (`*_B`): valid (it counts), desirable, reward r, kl (log π − log π_ref of y'), logp. Also the
    harness's `Method.eval_rows` (`summarise` over all eval rows gives `eval/kto/*`)."""
    model_cfg, on_the_fly = loss_config.model, loss_config.reference_on_the_fly
    logp, n = _logps(params, batch, model_cfg)
    kl_logp, n_kl = _logps(jax.lax.stop_gradient(params), batch, model_cfg, "kl_")  # z₀ takes no gradient
    if on_the_fly and frozen is None:
        raise ValueError("reference_on_the_fly=True needs the reference params as `frozen`")
    ref = reference_column(frozen, batch, model_cfg) if on_the_fly else batch
    ref_logp, ref_kl = (jax.lax.stop_gradient(ref[k]) for k in REF_KEYS)
    valid = batch["row_mask_B"].astype(jnp.float32) * (n > 0) * (n_kl > 0)
    zero = lambda x: jnp.where(valid > 0, x, 0.0)  # noqa: E731  (rows that do not count hold 0: finite)
    return {"valid_B": valid, "desirable_B": zero(batch["desirable_B"].astype(jnp.float32)),
            "reward_B": zero(logp - ref_logp), "kl_B": zero(kl_logp - ref_kl), "logp_B": zero(logp)}


def summarise(terms: dict, config: KTOLossConfig, prefix: str = "kto/"):
    """(loss_B, metrics) of per-example terms, z₀ estimated over all of them: a batch in training, the whole
    held-out set in evals (so eval metrics do not depend on the eval batch size)."""
    valid, desirable, reward = terms["valid_B"], terms["desirable_B"], terms["reward_B"]
    z0, kl = reference_point(terms["kl_B"], valid)
    loss_B = per_example_loss(reward, z0, desirable, config)
    agrees = 0.5 + 0.5 * jnp.sign(jnp.where(desirable > 0, reward - z0, z0 - reward))  # 1, ½ on ties, 0
    return loss_B, {f"{prefix}loss": masked_mean(loss_B, valid), f"{prefix}z0": z0, f"{prefix}kl": kl,
                    f"{prefix}reward_desirable": masked_mean(config.beta * reward, desirable),
                    f"{prefix}reward_undesirable": masked_mean(config.beta * reward, valid * (1.0 - desirable)),
                    f"{prefix}accuracy": masked_mean(agrees, valid),
                    f"{prefix}desirable_frac": masked_mean(desirable, valid),
                    f"{prefix}logp": masked_mean(terms["logp_B"], valid)}


def loss_fn(params, batch, *, frozen, config: KTOLossConfig, rng):
    """(Σ per-example loss, examples that count, metrics) of a `collate_unpaired` batch (module docstring)."""
    del rng
    terms = example_terms(params, batch, frozen, config)
    loss_B, metrics = summarise(terms, config)
    return masked_sum(loss_B, terms["valid_B"]), terms["valid_B"].sum(), metrics
