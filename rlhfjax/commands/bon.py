"""`rlhfjax bon`: best-of-n for several n, and its distillation (recipes/bon.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="bon", objective="sample n, keep the RM's best; KL = log n − (n−1)/n",
    paper="Stiennon et al. 2020; Gao et al. 2022",
    help="best-of-n by the RM for several n: proxy, gold, analytic + plug-in KL; distillation",
    whole_run="its table is one pass; run `superhf` to step through a distillation",
    checks={"bon.n": C.POSITIVE, "bon.pool": C.POSITIVE, "bon.num_prompts": C.POSITIVE,
            "bon.prompt_batch": C.POSITIVE, "bon.distill_n": C.POSITIVE}))
