"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", OAIF) of the toy-lab
SFT policy: two samples per prompt from the current policy, a judge picks one, DPO on the pair against the SFT policy.

    rlhfjax online_dpo --config experiments/toylab_online_dpo.py --workdir runs/toylab/online_dpo
    rlhfjax online_dpo --config experiments/toylab_online_dpo.py:smoke --workdir /tmp/online_dpo_smoke
    rlhfjax online_dpo --config experiments/toylab_online_dpo.py --config.online_dpo.judge=gold ...  # oracle
    rlhfjax online_dpo --config experiments/toylab_online_dpo.py --config.online_dpo.loss=ipo ...

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py); with judge=gold the
reward model only reports the proxy reward. Measured with the test suite's briefly trained SFT policy and RM
(held-out gold of the SFT policy 0.32; 40 iterations, 50-65 s on 2 busy cores): judge=reward reaches gold 0.54 at
KL 4.2, judge=gold 0.54 at KL 1.1 (its ties, 0-25% of pairs, count nothing).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    # Temperature: DPO's log-probs are T = 1, so its pairs are exact policy samples only at T = 1; TRL's online DPO
    # samples at 0.9. On the toy lab T = 1 and 0.9 leave the RM's training distribution (proxy rises, gold peaks
    # at +0.08 / +0.10 and falls by 40 iterations); 0.7, PPO's here, raises gold and puts evals on PPO's axes.
    c = toylab_online_config(temperature=0.7)

    c.online_dpo = ml_collections.ConfigDict()
    c.online_dpo.judge = "reward"  # reward: the RM, in the LLM annotator's place | gold: the toy lab's gold reward
    c.online_dpo.loss = "dpo"  # dpo (Rafailov et al. 2023) | ipo (Azar et al. 2023) | cdpo; OAIF runs DPO, IPO, SLiC
    c.online_dpo.beta = 0.1  # β: DPO's 0.1 (Rafailov et al. 2023; TRL's online DPO); IPO's τ
    c.online_dpo.label_smoothing = 0.0  # cdpo's ε, in (0, 0.5)
    c.online_dpo.ipo_normalise = "sum"  # ipo's Δ: summed log-ratios (Azar et al., Eq. 17) | mean (per token)
    c.online_dpo.epochs = 1  # OAIF Algorithm 1: each fresh pair is used for one step, then resampled
    c.online_dpo.num_minibatches = 1  # train.batch_size pairs split into this many steps per epoch

    c.optim.learning_rate = 1e-4  # experiments/toylab_dpo.py's; OAIF's rate for PaLM 2 does not transfer

    c.train = online_train_config(iterations=40, batch_size=16, eval_every=10)  # 16 pairs per iteration

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.online_dpo.num_minibatches = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
