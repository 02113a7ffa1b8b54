"""`rlhfjax rloo`: RLOO on the group policy-gradient recipe (recipes/group_pg.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="rloo", help="RLOO: leave-one-out baseline over k completions per prompt, KL in the reward",
    iterate_method=True,
    checks={"rloo.group_size": C.at_least(2), "rloo.kl_coef": C.NON_NEGATIVE, "rloo.epochs": C.POSITIVE,
            "rloo.num_minibatches": C.POSITIVE, "rloo.clip": C.NON_NEGATIVE,
            "rloo.aggregation": C.OneOf(C.AGGREGATIONS), "rloo.first_ratio": C.OneOf(C.FIRST_RATIOS)}))
