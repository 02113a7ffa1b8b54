"""`rlhfjax reinforce_pp`: REINFORCE++, per-token KL rewards, returns normalised over the whole batch
(recipes/reinforce_pp.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="reinforce_pp",
    objective="PPO-clip on returns of r_t = score·[t = last] − β·KL_t, normalised over the global batch; no critic",
    paper='Hu 2025, "REINFORCE++"',
    help="REINFORCE++: token KL penalty, returns normalised over the batch, clipped ratio",
    iterate_method=True,
    checks={"reinforce_pp.kl_coef": C.NON_NEGATIVE, "reinforce_pp.samples_per_prompt": C.POSITIVE,
            "reinforce_pp.epochs": C.POSITIVE, "reinforce_pp.num_minibatches": C.POSITIVE,
            "reinforce_pp.clip": C.NON_NEGATIVE, "reinforce_pp.aggregation": C.OneOf(C.AGGREGATIONS),
            "reinforce_pp.first_ratio": C.OneOf(C.FIRST_RATIOS)}))
