"""`rlhfjax grpo`: GRPO on the group policy-gradient recipe (recipes/group_pg.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="grpo", objective="PPO-clip with A_i = (r_i − mean_G r) / std_G r + β·KL_t (k3) in the loss",
    paper='Shao et al. 2024, "DeepSeekMath" §4.1',
    help="GRPO: group-normalised advantages, clipped ratio, per-token KL term",
    iterate_method=True,
    checks={"grpo.group_size": C.at_least(2), "grpo.kl_coef": C.NON_NEGATIVE, "grpo.epochs": C.POSITIVE,
            "grpo.num_minibatches": C.POSITIVE, "grpo.clip": C.NON_NEGATIVE,
            "grpo.aggregation": C.OneOf(C.AGGREGATIONS), "grpo.first_ratio": C.OneOf(C.FIRST_RATIOS),
            "grpo.kl_estimator": C.OneOf(C.KL_ESTIMATORS)}))
