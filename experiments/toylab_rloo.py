"""RLOO of the toy-lab SFT policy against the toy-lab reward model (Ahmadian et al. 2024, "Back to Basics").

    rlhfjax rloo --config experiments/toylab_rloo.py --workdir runs/toylab/rloo
    rlhfjax rloo --config experiments/toylab_rloo.py:smoke --workdir /tmp/rloo_smoke

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, ratio_settings, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=0.7)  # as toylab_ppo.py; see the note below

    c.rloo = ml_collections.ConfigDict()
    c.rloo.group_size = 4  # k completions per prompt (Ahmadian et al.: k = 2 and 4)
    c.rloo.kl_coef = 0.05  # β of the sequence KL in the reward, R = score − β·Σ_t (log π − log π_ref) (TRL: 0.05)
    c.rloo.aggregation = "sequence_sum"  # REINFORCE on log π(y) (objectives/group_pg.py); token_mean | sequence_mean
    c.rloo.epochs = 1  # Ahmadian et al.: one update per batch, so the ratio is 1 and the clip never acts
    c.rloo.num_minibatches = 1  # train.batch_size × group_size rows split into this many steps per epoch
    c.rloo.clip = 0.2  # ε of the clipped ratio, active only with several epochs or minibatches
    ratio_settings(c.rloo)  # rloo.first_ratio (own_logp: exactly 1 on the first minibatch, free) and rloo.remat

    c.optim.learning_rate = 5e-5  # for the toy policy (note below)
    # Toy-lab note (measured with the test suite's briefly trained SFT policy and RM, 24 iterations): at
    # T = 1 the policy's samples drift out of the RM's training distribution and proxy reward rises
    # while gold does not; at T = 0.7 (PPO's temperature here) gold rises too.

    # train.batch_size prompts per iteration, each with group_size completions.
    c.train = online_train_config(iterations=40, batch_size=16, eval_every=10)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.rloo.num_minibatches = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
