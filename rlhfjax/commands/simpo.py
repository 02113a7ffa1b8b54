"""`rlhfjax simpo`: SimPO, a length-normalised reward with a target margin, no reference model (recipes/simpo.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="simpo", objective="−log σ(β/|y_w| log π(y_w) − β/|y_l| log π(y_l) − γ); no reference",
    paper='Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"',
    help="SimPO of an SFT policy on comparisons: β/|y|·log π(y) rewards, margin γ, no reference model",
    checks={"simpo.beta": C.above(0), "simpo.gamma_beta_ratio": C.NON_NEGATIVE}))
