"""`rlhfjax simpo`: SimPO, a length-normalised reward with a target margin, no reference model (recipes/simpo.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="simpo", help="SimPO of an SFT policy on comparisons: β/|y|·log π(y) rewards, margin γ, no reference model",
    checks={"simpo.beta": C.above(0), "simpo.gamma_beta_ratio": C.NON_NEGATIVE}))
