"""Best-of-n of the toy-lab SFT policy against the toy-lab reward model, n = 1 … 64 in one run
(Stiennon et al. 2020; Gao et al. 2022), optionally distilled into the policy (expert iteration).

    rlhfjax bon --config experiments/toylab_bon.py --workdir runs/toylab/bon
    rlhfjax bon --config experiments/toylab_bon.py:smoke --workdir /tmp/bon_smoke
    rlhfjax bon --config experiments/toylab_bon.py --config.bon.distill=True --workdir runs/toylab/bon_distill

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=1.0)  # the policy's own distribution; the KL is to it

    c.bon = ml_collections.ConfigDict()
    c.bon.n = (1, 2, 4, 8, 16, 32, 64)  # best of n, each from disjoint groups of a prompt's pool
    c.bon.pool = 256  # samples per prompt; n = 64 gets 4 independent draws, and the plug-in KL a pool ≫ n
    c.bon.num_prompts = 128  # held-out prompts (data.eval_split)
    c.bon.prompt_batch = 4  # prompts per sampling call (× pool rows)
    c.bon.distill = False  # True: first distil best-of-distill_n into the policy (train.* below), then the table
    c.bon.distill_n = 16

    # Only for bon.distill: iterations of expert iteration (SuperHF's step, top-1, no KL prior), each one
    # optimizer step on the best completion of each of train.batch_size prompts.
    c.optim.learning_rate = 1e-4
    c.train = online_train_config(iterations=40, batch_size=8, eval_every=10)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.bon.n = (1, 2, 4)
        c.bon.pool = 8
        c.bon.num_prompts = 8
        c.bon.prompt_batch = 8
        c.bon.distill = True
        c.bon.distill_n = 4
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
