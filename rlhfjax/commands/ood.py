"""`rlhfjax ood`: OOD detection on prompt activations (recipes/ood.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="ood", help="OOD detection: Mahalanobis / relative Mahalanobis AUROC on prompt activations",
    whole_run="it trains nothing",
    checks={"ood.batch_size": C.POSITIVE, "ood.shrinkage": C.NON_NEGATIVE, "ood.fit_limit": C.NON_NEGATIVE,
            "ood.test_limit": C.NON_NEGATIVE, "ood.ood_limit": C.NON_NEGATIVE}))
