"""`rlhfjax distill`: context distillation (recipes/distill.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="distill", help="context distillation: the plain policy learns the prompted one",
    checks={"distill.responses": C.OneOf(C.DISTILL_RESPONSES), "distill.temperature": C.TEMPERATURE,
            "distill.loss_temperature": C.TEMPERATURE, "distill.epochs": C.POSITIVE,
            "distill.num_minibatches": C.POSITIVE}))
