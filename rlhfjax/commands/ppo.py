"""`rlhfjax ppo`: PPO-RLHF (recipes/ppo.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="ppo", objective="max E[r − β·KL_t per token] by PPO-clip on GAE advantages, value model, adaptive β",
    paper="Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022",
    help="PPO-RLHF: policy + value, per-token KL to the reference, GAE, adaptive KL",
    iterate_method=True,
    checks={"kl.controller": C.OneOf(C.KL_CONTROLLERS), "kl.estimator": C.OneOf(C.KL_ESTIMATORS),
            "kl.init_coef": C.NON_NEGATIVE, "kl.target": C.above(0), "kl.horizon": C.above(0),
            "value.model": C.OneOf(C.VALUE_MODELS),
            "ppo.epochs": C.POSITIVE, "ppo.num_minibatches": C.POSITIVE, "ppo.clip": C.NON_NEGATIVE,
            "ppo.value_clip": C.NON_NEGATIVE, "ppo.value_coef": C.NON_NEGATIVE, "ppo.entropy_coef": C.FINITE,
            "ppo.first_ratio": C.OneOf(C.FIRST_RATIOS),
            "ppo.remat_policy": C.OneOf(p for p in C.REMAT_POLICIES if p != "none"),
            "ppo.experience_jit": C.OneOf(C.EXPERIENCE_JITS), "ppo.gamma": C.PROBABILITY, "ppo.lam": C.PROBABILITY}))
