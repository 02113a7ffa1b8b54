"""KTO of the toy-lab SFT policy on unpaired desirable / undesirable examples (offline, no RM needed).

    rlhfjax kto --config experiments/toylab_kto.py --workdir runs/toylab/kto
    rlhfjax kto --config experiments/toylab_kto.py:smoke --workdir /tmp/kto_smoke
    rlhfjax kto --config experiments/toylab_kto.py --config.kto.data=gold_threshold ...  # gold-labelled demos
    rlhfjax kto --config experiments/toylab_kto.py --config.reward.init_from=runs/toylab/rm/model ...  # + proxy

Needs the SFT policy (`rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft`): the initial
policy and the frozen reference (`:smoke`: a random tiny one). Data, policy, reward and eval sections are every offline
method's (`config_blocks.toylab_offline_config`): gold reward and KL on DPO's and the online methods' axes.

Hyperparameters: β = 0.1, λ_D = λ_U = 1 (Ethayarajh et al. 2024, §4.2); "pairs" gives n_D = n_U, inside their
λ_D n_D / (λ_U n_U) ∈ [1, 4/3], as does the median threshold of "gold_threshold" (ties count as desirable: 1.1 on
the toy lab). Their learning rate (5e-6) is for 1B+ models; the toy policy (64 wide, 2 layers) needs a larger step:
rate, warm-up and steps are DPO's toy-lab ones (experiments/toylab_dpo.py). About 43 s on a 2-core CPU (RM given).
"""

import ml_collections

from rlhfjax.config_blocks import offline_smoke, toylab_offline_config, train_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_offline_config()

    c.kto = ml_collections.ConfigDict()
    c.kto.data = "pairs"  # pairs: comparisons split in two | gold_threshold: demos labelled by gold (toy lab)
    c.kto.beta = 0.1  # β (Ethayarajh et al. 2024: 0.1)
    c.kto.desirable_weight = 1.0  # λ_D (paper: 1)
    c.kto.undesirable_weight = 1.0  # λ_U (paper: 1)
    c.kto.gold_quantile = 0.5  # gold_threshold: desirable iff gold ≥ this quantile of the train demos' gold
    c.kto.reference_on_the_fly = False  # True: reference params on device, log-probs each step (no stored column)
    c.kto.reference_batch_size = 0  # examples per batch of the one-off reference pass; 0 = train.batch_size

    c.optim.learning_rate = 1e-4  # paper: 5e-6 for 1B+ models; the 64-wide toy policy needs more (as DPO's)
    c.optim.warmup_steps = 20  # scaled to the toy run, as DPO's
    c.optim.schedule = "constant"  # after warm-up, as DPO's

    c.train = train_config(steps=250, batch_size=64, eval_every=25)

    if arg == "smoke":  # stands alone: a random tiny policy (pass policy.init_from to use a real one)
        offline_smoke(c)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
