"""`rlhfjax superhf`: SuperHF (recipes/superhf.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="superhf", objective="NLL of the RM's top-k of a superbatch + β·KL(π_ref ‖ π) prior",
    paper='Mukobi et al. 2023, "SuperHF"',
    help="SuperHF: best of a superbatch by the RM, NLL + KL prior to the reference",
    iterate_method=True,
    checks={"superhf.superbatch": C.POSITIVE, "superhf.top_k": C.POSITIVE, "superhf.kl_coef": C.NON_NEGATIVE,
            "superhf.kl_prior": C.OneOf(C.KL_PRIORS), "superhf.prompt_accumulation": C.POSITIVE}))
