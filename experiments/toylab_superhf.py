"""SuperHF of the toy-lab SFT policy against the toy-lab reward model (Mukobi et al. 2023).

    rlhfjax superhf --config experiments/toylab_superhf.py --workdir runs/toylab/superhf
    rlhfjax superhf --config experiments/toylab_superhf.py:smoke --workdir /tmp/superhf_smoke
    rlhfjax superhf --config experiments/toylab_superhf.py --config.superhf.kl_coef=0.1 ...

Needs the SFT policy and the reward model, as `rlhfjax ppo` does (experiments/toylab_ppo.py). Defaults
cite the official code, openfeedback/superhf ("SHF" below: its training defaults and the paper's
Pythia/LLaMA runs); sizes are scaled down for the toy lab.
"""

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, toylab_online_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=1.0)  # SHF: temperature 1.0
    c.rollout.top_p = 0.95  # SHF: top-p 0.95
    c.data.max_response_len = 24  # SHF: 64 new tokens; toy-lab responses fit in 24 (and the toy model's context is 64)

    c.superhf = ml_collections.ConfigDict()
    c.superhf.superbatch = 16  # SHF: superbatch_size 16 completions per prompt
    c.superhf.top_k = 1  # SHF: keep the best completion per prompt
    c.superhf.kl_coef = 0.35  # SHF: kl_coefficient 0.35 (0.23 for its LLaMA run); 0 = plain expert iteration
    # ref_policy: KL(π_ref ‖ π_θ) over the vocabulary at each kept token, averaged, clamped ≥ 0 (SHF's
    # KLDivLoss form); policy_ref: KL(π_θ ‖ π_ref). SHF adds β·KL_i per kept completion of a step (a sum
    # over its 2 completions); here β multiplies the token-weighted mean (objectives/superhf.py).
    c.superhf.kl_prior = "ref_policy"
    c.superhf.prompt_accumulation = 2  # SHF: prompt_accumulation_steps 2 prompts per optimizer step
    c.superhf.drop_empty = True  # SHF drops empty completions before filtering (here: ranked last)

    c.optim.learning_rate = 1e-4  # SHF: 2e-5 for Pythia/LLaMA-7B (LoRA); the toy policy needs more
    c.optim.warmup_steps = 8  # SHF: 32 warm-up steps, then cosine
    c.optim.schedule = "cosine"

    # train.batch_size prompts per iteration → batch_size / prompt_accumulation optimizer steps
    # (= prompt_accumulation is SHF's loop exactly; larger samples several steps ahead, see the recipe).
    c.train = online_train_config(iterations=40, batch_size=8, eval_every=10)

    if arg == "smoke":  # stands alone: random tiny policy and RM (pass init_from to use real ones)
        online_smoke(c)
        c.superhf.superbatch = 4
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
