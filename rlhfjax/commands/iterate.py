"""`rlhfjax iterate`: iterated online RLHF (recipes/iterate.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, iterate_methods, register

register(Command(
    name="iterate", help="iterated online RLHF: rounds of new comparisons → PM → RL",
    stop_field="iterate.stop_at",
    checks={"iterate.method": C.OneOf(iterate_methods), "iterate.labeller": C.OneOf(C.LABELLERS),
            "iterate.pm_init": C.OneOf(C.PM_INITS), "iterate.pool": C.OneOf(C.ANNOTATOR_POOLS),
            "iterate.rounds": C.POSITIVE, "iterate.comparisons": C.POSITIVE, "iterate.eval_comparisons": C.POSITIVE,
            "iterate.earlier_policy_frac": C.PROBABILITY, "iterate.max_unlabelled_fraction": C.PROBABILITY,
            "iterate.temperature": C.TEMPERATURE, "iterate.batch_size": C.POSITIVE, "iterate.pm_epochs": C.above(0),
            "iterate.stop_at": C.NON_NEGATIVE}))
