"""PPO-RLHF of the toy-lab SFT policy against the toy-lab reward model (Ziegler et al. 2019 recipe).

    rlhfjax ppo --config experiments/toylab_ppo.py --workdir runs/toylab/ppo
    rlhfjax ppo --config experiments/toylab_ppo.py:smoke --workdir /tmp/ppo_smoke
    rlhfjax ppo --config experiments/toylab_ppo.py --config.kl.controller=fixed --config.kl.init_coef=0.05 ...

Needs the SFT policy (`rlhfjax sft ... --workdir runs/toylab/sft`) and the reward model
(`rlhfjax rm ... --workdir runs/toylab/rm --config.model.init_from=runs/toylab/sft/model`); the
`:smoke` variant needs nothing (a random tiny policy and RM, unless init_from is given).
The reference policy is `policy.init_from` itself; by default the value model is a separate model
initialised from the reward model (Stiennon et al. 2020, as TRL does); `value.model=policy_head` is
lm-human-preferences' choice, a scalar head on the policy's own trunk.
Defaults cite Ziegler et al. 2019 and its code, lm-human-preferences ("LHP" below); sizes are
scaled down for the toy lab (2 CPU cores).
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, ratio_settings, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=0.7)  # LHP: T = 0.7; log-probs, KL and the PPO ratio all use π_T
    c.data.max_prompt_len = 16  # LHP: query 64 tokens
    c.data.max_response_len = 24  # = generated tokens per response, fixed (LHP: response 24)
    c.reward.score_clip = 0.0  # > 0: clip the normalised score to ±score_clip; 0 = off
    c.reward.penalise_no_eos = False  # LHP: replace the score of responses that never emit EOS ...
    c.reward.no_eos_penalty = -1.0  # ... by this value

    c.value = ml_collections.ConfigDict()
    c.value.model = "separate"  # separate (Stiennon et al. 2020, TRL) | policy_head: a head on the policy's trunk (LHP)
    c.value.init_from = ""  # separate: "" = the reward model (Stiennon et al. 2020 initialise the value from the RM)

    c.kl = ml_collections.ConfigDict()
    c.kl.controller = "adaptive"  # adaptive (LHP) | fixed (Bai et al.: λ_KL = 0.001 on HH)
    c.kl.init_coef = 0.15  # β at the start (LHP: initial 0.15)
    c.kl.target = 6.0  # nats of sequence KL the adaptive controller steers to (LHP: 6)
    c.kl.horizon = 2000.0  # episodes (LHP: 10,000 at batch 512; scaled to the toy run's ~6k episodes)
    c.kl.estimator = "k1"  # per-token KL in the rewards: k1 (LHP, unbiased) | k3 (unbiased, ≥ 0) | k2

    c.ppo = ml_collections.ConfigDict()
    c.ppo.epochs = 4  # LHP: 4 PPO epochs per rollout batch
    c.ppo.num_minibatches = 4  # minibatches per epoch (static shapes: train.batch_size divisible)
    c.ppo.clip = 0.2  # LHP / Bai et al.: 0.2
    c.ppo.value_clip = 0.2  # LHP: cliprange_value 0.2
    c.ppo.value_coef = 0.1  # LHP: vf_coef 0.1
    c.ppo.entropy_coef = 0.0  # Bai et al.: no entropy bonus
    ratio_settings(c.ppo)  # ppo.first_ratio (own_logp: exactly 1 on the first minibatch, free) and ppo.remat
    c.ppo.remat_policy = "nothing_saveable"  # what remat keeps (jax.checkpoint_policies)
    # True: each experience phase (score, log-probs, values, reference, advantages) timed on its own
    # (time/<phase>); False: timed together (time/experience), without waiting between them
    c.ppo.time_phases = False
    # fused: the phases after generation as one jit; phases: one jit each; auto: fused on a GPU/TPU, phases
    # on the CPU (where fusing measured slower: docs/benchmarks.md)
    c.ppo.experience_jit = "auto"
    c.ppo.gamma = 1.0  # LHP / Bai et al.
    c.ppo.lam = 0.95  # LHP
    c.ppo.whiten_rewards = True  # LHP: whitened rewards (rescaled, mean kept)
    c.ppo.whiten_advantages = True  # LHP

    c.optim.learning_rate = 1e-4  # LHP: 1e-5 for GPT-2 124M; the 64-wide toy policy needs a larger step
    c.optim.total_steps = 0  # 0 = train.iterations × ppo.epochs × ppo.num_minibatches

    # train.iterations = PPO iterations; train.batch_size = prompts (episodes) per iteration (LHP: 512).
    # Every train.eval_every iterations (and before the first): the policy on held-out prompts
    # (data.eval_split, up to data.eval_limit), logged as eval/reward/{proxy,gold}, eval/kl/seq_mean.
    c.train = online_train_config(iterations=100, batch_size=64, eval_every=20)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.ppo.epochs = 2
        c.ppo.num_minibatches = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
