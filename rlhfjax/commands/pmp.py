"""`rlhfjax pmp`: preference-model pre-training, then fine-tuning: two `rm` runs (recipes/pmp.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="pmp", help="preference-model pre-training on generic comparisons, then fine-tuning",
    whole_run="run its two rm stages as `rm` runs to step through them",
    checks={"pretrain.objective": C.OneOf(C.RM_OBJECTIVES), "pretrain.steps": C.NON_NEGATIVE,
            "pretrain.batch_size": C.POSITIVE, "pretrain.eval_every": C.POSITIVE, "pretrain.limit": C.NON_NEGATIVE,
            "pretrain.learning_rate": C.NON_NEGATIVE}))
