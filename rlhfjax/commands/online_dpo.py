"""`rlhfjax online_dpo`: online DPO / OAIF (recipes/online_dpo.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="online_dpo", objective="DPO's loss on two fresh samples per prompt, the judge's preferred one chosen; ties 0",
    paper='Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback" §3',
    help="Online DPO (OAIF): two samples per prompt, a judge picks one, DPO on the pair",
    iterate_method=True,
    checks={"online_dpo.judge": C.OneOf(C.JUDGES), "online_dpo.loss": C.OneOf(C.DPO_LOSSES),
            "online_dpo.beta": C.above(0), "online_dpo.label_smoothing": C.Range(0, 0.5, open_high=True),
            "online_dpo.ipo_normalise": C.OneOf(C.IPO_NORMALISE), "online_dpo.epochs": C.POSITIVE,
            "online_dpo.num_minibatches": C.POSITIVE}))
