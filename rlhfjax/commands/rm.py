"""`rlhfjax rm`: preference (reward) models (recipes/rm.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="rm", help="preference model: ranked | binary | imitation objectives, PMP",
    checks={"rm.objective": C.OneOf(C.RM_OBJECTIVES), "rm.lm_coef": C.NON_NEGATIVE,
            "rm.val_fraction": C.Range(0, 1, open_high=True), "rm.select_by": C.OneOf(C.RM_SELECT_BY),
            "rm.freeze_backbone_steps": C.NON_NEGATIVE, "data.num_responses": C.at_least(2)}))
