"""`rlhfjax rloo`: RLOO on the group policy-gradient recipe (recipes/group_pg.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="rloo", objective="REINFORCE with A_i = R_i − mean_{j≠i} R_j, R = r − β·KL_seq",
    paper='Ahmadian et al. 2024, "Back to Basics"',
    help="RLOO: leave-one-out baseline over k completions per prompt, KL in the reward",
    iterate_method=True,
    checks={"rloo.group_size": C.at_least(2), "rloo.kl_coef": C.NON_NEGATIVE, "rloo.epochs": C.POSITIVE,
            "rloo.num_minibatches": C.POSITIVE, "rloo.clip": C.NON_NEGATIVE,
            "rloo.aggregation": C.OneOf(C.AGGREGATIONS), "rloo.first_ratio": C.OneOf(C.FIRST_RATIOS)}))
