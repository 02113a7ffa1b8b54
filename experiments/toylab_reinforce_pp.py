"""REINFORCE++ of the toy-lab SFT policy against the toy-lab reward model (Hu 2025, arXiv 2501.03262).

    rlhfjax reinforce_pp --config experiments/toylab_reinforce_pp.py --workdir runs/toylab/reinforce_pp
    rlhfjax reinforce_pp --config experiments/toylab_reinforce_pp.py:smoke --workdir /tmp/reinforce_pp_smoke

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py). Defaults cite
OpenRLHF's REINFORCE++ script (examples/scripts/train_reinforce_llama_ray.sh, the paper's implementation).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, ratio_settings, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=0.7)  # as toylab_rloo.py

    c.reinforce_pp = ml_collections.ConfigDict()
    c.reinforce_pp.kl_coef = 0.01  # β of the per-token k1 penalty in the reward (OpenRLHF: --init_kl_coef 0.01)
    c.reinforce_pp.samples_per_prompt = 1  # OpenRLHF: --n_samples_per_prompt 1 (REINFORCE++ without a baseline)
    c.reinforce_pp.epochs = 1  # OpenRLHF: --max_epochs 1
    # train.batch_size × samples_per_prompt rows split into this many steps per epoch, after the whole batch's
    # normalisation (OpenRLHF: rollout batch 1024 / train batch 128 = 8)
    c.reinforce_pp.num_minibatches = 4
    c.reinforce_pp.clip = 0.2  # ε of the clipped ratio (OpenRLHF's default --eps_clip 0.2)
    c.reinforce_pp.aggregation = "token_mean"  # OpenRLHF's token-mean loss | sequence_mean | sequence_sum
    ratio_settings(c.reinforce_pp)  # first_ratio (own_logp: exactly 1 on the first minibatch, free) and remat

    c.optim.learning_rate = 5e-5  # OpenRLHF: 5e-7 for Llama-3-8B; the toy policy needs more
    # train.batch_size prompts per iteration.
    c.train = online_train_config(iterations=40, batch_size=32, eval_every=10)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.reinforce_pp.num_minibatches = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
