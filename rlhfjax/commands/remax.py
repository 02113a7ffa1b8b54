"""`rlhfjax remax`: ReMax, REINFORCE with the greedy response's reward as baseline (recipes/remax.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="remax", objective="REINFORCE with A = r(y) − β·KL(y) − r(greedy ȳ)",
    paper='Li et al. 2023, "ReMax"',
    help="ReMax: REINFORCE on one sample per prompt, the greedy response's reward as baseline",
    iterate_method=True,
    checks={"remax.kl_coef": C.NON_NEGATIVE, "remax.aggregation": C.OneOf(C.AGGREGATIONS),
            "remax.first_ratio": C.OneOf(C.FIRST_RATIOS)}))
