"""SimPO of the toy-lab SFT policy on the toy lab's comparisons (offline, no reference model, no RM needed).

    rlhfjax simpo --config experiments/toylab_simpo.py --workdir runs/toylab/simpo
    rlhfjax simpo --config experiments/toylab_simpo.py:smoke --workdir /tmp/simpo_smoke
    rlhfjax simpo --config experiments/toylab_simpo.py --config.reward.init_from=runs/toylab/rm/model ...  # + proxy

Needs the SFT policy (`rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft`): the initial
policy, and the KL anchor of the held-out evals only (the loss has no reference). The `:smoke` variant needs
nothing (a random tiny policy). The data, policy, reward and eval sections are every offline method's
(`config_blocks.toylab_offline_config`), so SimPO lands on DPO's reward vs √KL axes.

Hyperparameters follow Meng et al. 2024 ("SimPO", its experimental setup and the reference code's training
configs) where they transfer: β = 2.0 and γ/β = 0.5 (Llama3-Base; γ = 1.0), a 10% linear warm-up, then cosine
decay. Their learning rates (3e-7 to 1e-6, batch 128) are for 7-8B models; the toy policy (64 wide, 2 layers,
trained from scratch at 2e-3) needs a larger step, though half DPO's here (toylab_dpo.py): with no reference to
hold it, SimPO drifts fast (chosen responses' log-probs fall, as in DPO).
Run time: about 65 s on a 2-core CPU (measured 65 s from the test suite's briefly trained SFT policy, whose
held-out gold reward rose 0.32 → 0.43 at a KL of 4.4; at 3e-4 it fell below the SFT policy's by step 50).
"""

import ml_collections

from rlhfjax.config_blocks import offline_smoke, toylab_offline_config, train_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_offline_config()

    c.simpo = ml_collections.ConfigDict()
    c.simpo.beta = 2.0  # reward scale β (Meng et al.: 2.0 for Base models, 2.5 for Instruct; code default 2.0)
    c.simpo.gamma_beta_ratio = 0.5  # γ/β, the target margin over β (code README: start at 0.5; Llama3-Base 0.5)

    c.optim.learning_rate = 5e-5  # Meng et al.: 3e-7..1e-6 for 7-8B models; the 64-wide toy policy needs more
    c.optim.warmup_steps = 25  # Meng et al.: warm-up ratio 0.1
    c.optim.schedule = "cosine"  # as Meng et al.

    c.train = train_config(steps=250, batch_size=64, eval_every=25)

    if arg == "smoke":  # stands alone: a random tiny policy (pass policy.init_from to use a real one)
        offline_smoke(c)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
