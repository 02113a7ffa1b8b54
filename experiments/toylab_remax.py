"""ReMax of the toy-lab SFT policy against the toy-lab reward model (Li et al. 2023, arXiv 2310.10505).

    rlhfjax remax --config experiments/toylab_remax.py --workdir runs/toylab/remax
    rlhfjax remax --config experiments/toylab_remax.py:smoke --workdir /tmp/remax_smoke
    rlhfjax remax --config experiments/toylab_remax.py --config.remax.kl_coef=0 ...   # Algorithm 1's plain reward

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, ratio_settings, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=0.7)  # as toylab_rloo.py (reference code: T = 1, top-p 0.9)

    c.remax = ml_collections.ConfigDict()
    # β of the sampled response's sequence KL, subtracted from its reward (reference code: --kl_ctl 0.05, per
    # token; Algorithm 1: none, β = 0)
    c.remax.kl_coef = 0.05
    c.remax.aggregation = "sequence_sum"  # Algorithm 1's Σ_t ∇log π(y_t) per response; token_mean: reference code's
    ratio_settings(c.remax)  # remax.first_ratio (own_logp: the one step's ratio exactly 1, free) and remax.remat

    c.optim.learning_rate = 5e-5  # reference code: 1e-6 for OPT-1.3B / Llama-2-7B; the toy policy needs more
    # train.batch_size prompts per iteration, each with one sampled and one greedy response; one step each.
    c.train = online_train_config(iterations=40, batch_size=32, eval_every=10)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
