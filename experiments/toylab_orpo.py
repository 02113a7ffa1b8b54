"""ORPO of the toy-lab SFT policy on the toy lab's comparisons (offline, no reference model, no RM needed).

    rlhfjax orpo --config experiments/toylab_orpo.py --workdir runs/toylab/orpo
    rlhfjax orpo --config experiments/toylab_orpo.py:smoke --workdir /tmp/orpo_smoke
    rlhfjax orpo --config experiments/toylab_orpo.py --config.reward.init_from=runs/toylab/rm/model ...  # + proxy

Needs the SFT policy (`rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft`): the initial
policy, and the KL anchor of the held-out evals only (the loss has no reference). Hong et al. start ORPO from a
base model; here it starts from the SFT policy, as DPO does, so the two compare from one point. The `:smoke`
variant needs nothing (a random tiny policy). The data, policy, reward and eval sections are every offline
method's (`config_blocks.toylab_offline_config`), so ORPO lands on DPO's reward vs √KL axes.

Hyperparameters follow Hong et al. 2024 ("ORPO", its experimental settings and the reference code's
Mistral-ORPO script) where they transfer: λ = 0.1, a linear warm-up. Their learning rate (5e-6, inverse-sqrt
decay after 200 warm-up steps, several epochs) is for 7B models; the toy policy (64 wide, 2 layers,
trained from scratch at 2e-3) needs a larger step, here 3 times DPO's (toylab_dpo.py), constant after warm-up:
the NLL term on the chosen responses holds the policy near its start (KL < 1 over the whole run).
Run time: about 70 s on a 2-core CPU (measured 68 s from the test suite's briefly trained SFT policy, whose
held-out gold reward rose 0.32 → 0.52 at a KL of 0.85; 0.56-0.58 at steps 200-225).
"""

import ml_collections

from rlhfjax.config_blocks import offline_smoke, toylab_offline_config, train_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_offline_config()

    c.orpo = ml_collections.ConfigDict()
    c.orpo.odds_ratio_weight = 0.1  # λ, the weight of the odds-ratio term (Hong et al.'s Mistral-ORPO-β: 0.1)

    c.optim.learning_rate = 3e-4  # Hong et al.: 5e-6 for 7B models; the 64-wide toy policy needs more
    c.optim.warmup_steps = 20  # Hong et al.: 200 warm-up steps of a longer run; scaled to the toy run
    c.optim.schedule = "constant"

    c.train = train_config(steps=250, batch_size=64, eval_every=25)

    if arg == "smoke":  # stands alone: a random tiny policy (pass policy.init_from to use a real one)
        offline_smoke(c)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
