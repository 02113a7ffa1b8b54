"""GRPO of the toy-lab SFT policy against the toy-lab reward model (Shao et al. 2024, DeepSeekMath §4.1).

    rlhfjax grpo --config experiments/toylab_grpo.py --workdir runs/toylab/grpo
    rlhfjax grpo --config experiments/toylab_grpo.py:smoke --workdir /tmp/grpo_smoke
    rlhfjax grpo --config experiments/toylab_grpo.py --config.grpo.aggregation=token_mean ...   # DAPO's

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, ratio_settings, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=0.7)  # as toylab_ppo.py; see the note below

    c.grpo = ml_collections.ConfigDict()
    c.grpo.group_size = 8  # G completions per prompt (DeepSeekMath: 64; scaled down for 2 CPU cores)
    c.grpo.kl_coef = 0.04  # β of the per-token KL term in the loss (DeepSeekMath: 0.04)
    c.grpo.kl_estimator = "k3"  # DeepSeekMath: π_ref/π − log(π_ref/π) − 1 (objectives/core.py kl_per_token)
    c.grpo.scale_by_std = True  # divide by the group's std (DeepSeekMath); False: one half of Dr. GRPO (below)
    c.grpo.aggregation = "sequence_mean"  # DeepSeekMath's 1/G Σ_i 1/|o_i| Σ_t | token_mean (DAPO) | sequence_sum
    # Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training") removes both of GRPO's normalisations: no
    # division by the group's std (scale_by_std=False) AND no 1/|o_i| per sequence (it divides by a constant, so the
    # gradient is proportional to aggregation=sequence_sum's). Set both for Dr. GRPO; either alone is not it.
    c.grpo.epochs = 1  # DeepSeekMath: μ = 1 policy update per batch of samples
    c.grpo.num_minibatches = 1  # train.batch_size × group_size rows split into this many steps per epoch
    c.grpo.clip = 0.2  # DeepSeekMath: ε = 0.2
    ratio_settings(c.grpo)  # grpo.first_ratio (own_logp: exactly 1 on the first minibatch, free) and grpo.remat

    c.optim.learning_rate = 5e-5  # DeepSeekMath: 1e-6 for a 7B model; the toy policy needs more (note below)
    # Toy-lab note (measured with the test suite's briefly trained SFT policy and RM, 24 iterations): at
    # T = 1 the policy's samples drift out of the RM's training distribution and proxy reward rises
    # while gold does not; at T = 0.7 (PPO's temperature here) gold rises too.

    # train.batch_size prompts per iteration, each with group_size completions.
    c.train = online_train_config(iterations=40, batch_size=8, eval_every=10)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.grpo.group_size = 4
        c.grpo.num_minibatches = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
