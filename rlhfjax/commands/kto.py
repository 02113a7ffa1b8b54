"""`rlhfjax kto`: Kahneman–Tversky Optimisation on unpaired desirable / undesirable examples (recipes/kto.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="kto", objective="λ_y − λ_y·σ(±β(log π/π_ref (y) − z₀)), z₀ = max(0, KL on mismatched pairs), unpaired labels",
    paper='Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"',
    help="KTO of an SFT policy on unpaired desirable / undesirable examples, no reward model",
    checks={"kto.data": C.OneOf(C.KTO_DATA), "kto.beta": C.above(0), "kto.desirable_weight": C.above(0),
            "kto.undesirable_weight": C.above(0), "kto.gold_quantile": C.PROBABILITY,
            "kto.reference_batch_size": C.NON_NEGATIVE}))
