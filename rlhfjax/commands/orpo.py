"""`rlhfjax orpo`: ORPO, NLL plus an odds-ratio penalty, no reference model (recipes/orpo.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="orpo",
    objective="NLL(y_w) + λ·(−log σ(log odds(y_w) − log odds(y_l))), odds of the mean token prob; no reference",
    paper='Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"',
    help="ORPO of a policy on comparisons: chosen NLL + λ·odds-ratio loss, no reference or reward model",
    checks={"orpo.odds_ratio_weight": C.NON_NEGATIVE}))
