"""`rlhfjax dpo`: DPO, IPO and conservative DPO (recipes/dpo.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="dpo", objective="−log σ(β[log π/π_ref (y_w) − log π/π_ref (y_l)]); ipo: squared; cdpo: smoothed",
    paper='Rafailov et al. 2023, "Direct Preference Optimization"',
    help="DPO / IPO / conservative DPO of an SFT policy on comparisons, no reward model",
    checks={"dpo.loss": C.OneOf(C.DPO_LOSSES), "dpo.beta": C.above(0),
            "dpo.label_smoothing": C.Range(0, 0.5, open_high=True), "dpo.reference_batch_size": C.NON_NEGATIVE,
            "dpo.ipo_normalise": C.OneOf(C.IPO_NORMALISE)}))
