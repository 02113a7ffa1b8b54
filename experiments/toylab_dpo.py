"""DPO / IPO / conservative DPO of the toy-lab SFT policy on the toy lab's comparisons (offline, no RM needed).

    rlhfjax dpo --config experiments/toylab_dpo.py --workdir runs/toylab/dpo
    rlhfjax dpo --config experiments/toylab_dpo.py:smoke --workdir /tmp/dpo_smoke
    rlhfjax dpo --config experiments/toylab_dpo.py --config.dpo.loss=ipo ...
    rlhfjax dpo --config experiments/toylab_dpo.py --config.dpo.loss=cdpo --config.dpo.label_smoothing=0.1 ...
    rlhfjax dpo --config experiments/toylab_dpo.py --config.reward.init_from=runs/toylab/rm/model ...  # + proxy reward
    rlhfjax dpo --config experiments/toylab_dpo.py --config.data.ranked_lists=true ...   # all pairs of ranked lists

Needs the SFT policy (`rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft`), which is
both the initial policy and the frozen reference; the `:smoke` variant needs nothing (a random tiny policy).
The data, policy, reward and eval sections are every offline method's (`config_blocks.toylab_offline_config`):
held-out evals sample like PPO's (temperature 0.7, 24 new tokens, the same test prompts), so DPO's gold reward
and KL land on the same reward vs √KL axes as the online methods.

Hyperparameters follow Rafailov et al. 2023 ("Direct Preference Optimization", §6 and App. B) where they
transfer: β = 0.1, batch 64, a linear warm-up, then a constant learning rate. Their 1e-6 (RMSprop, 150
warm-up steps) is for 1-6B-parameter models; the toy policy (64 wide, 2 layers, trained from scratch at
2e-3) needs a larger step, so the rate and warm-up are scaled down to the toy lab's ~250 steps here.
Run time: about 100 s on a 2-core CPU (measured 96-109 s for dpo, ipo, cdpo and ranked lists, RM given).
"""

import ml_collections

from rlhfjax.config_blocks import offline_smoke, toylab_offline_config, train_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_offline_config()

    c.dpo = ml_collections.ConfigDict()
    c.dpo.loss = "dpo"  # dpo (Rafailov et al. 2023) | ipo (Azar et al. 2023) | cdpo (label smoothing)
    c.dpo.beta = 0.1  # DPO's β (Rafailov et al.: 0.1); IPO's τ (target Δ = 1/(2β))
    c.dpo.label_smoothing = 0.0  # cdpo's ε, the assumed label-flip rate, in (0, 0.5) (DPO code's label_smoothing)
    c.dpo.ipo_normalise = "sum"  # ipo's Δ: summed log-ratios (Azar et al., Eq. 17) | mean (per token, as TRL)
    c.dpo.reference_on_the_fly = False  # True: reference params on device, log-probs each step (no stored column)
    c.dpo.reference_batch_size = 0  # pairs per batch of the one-off reference pass; 0 = train.batch_size

    c.optim.learning_rate = 1e-4  # Rafailov et al.: 1e-6 for 1-6B models; the 64-wide toy policy needs more
    c.optim.warmup_steps = 20  # Rafailov et al.: 150 steps of 64 pairs; scaled to the toy run
    c.optim.schedule = "constant"  # after warm-up, as Rafailov et al.

    c.train = train_config(steps=250, batch_size=64, eval_every=25)

    if arg == "smoke":  # stands alone: a random tiny policy (pass policy.init_from to use a real one)
        offline_smoke(c)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
