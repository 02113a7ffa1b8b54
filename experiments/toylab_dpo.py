"""DPO / IPO / conservative DPO of the toy-lab SFT policy on the toy lab's comparisons (offline, no RM needed).

    rlhfjax dpo --config experiments/toylab_dpo.py --workdir runs/toylab/dpo
    rlhfjax dpo --config experiments/toylab_dpo.py:smoke --workdir /tmp/dpo_smoke
    rlhfjax dpo --config experiments/toylab_dpo.py --config.dpo.loss=ipo ...
    rlhfjax dpo --config experiments/toylab_dpo.py --config.dpo.loss=cdpo --config.dpo.label_smoothing=0.1 ...
    rlhfjax dpo --config experiments/toylab_dpo.py --config.reward.init_from=runs/toylab/rm/model ...  # + proxy reward
    rlhfjax dpo --config experiments/toylab_dpo.py --config.data.ranked_lists=true ...   # all pairs of ranked lists

Needs the SFT policy (`rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft`), which is
both the initial policy and the frozen reference; the `:smoke` variant needs nothing (a random tiny policy).
Held-out evals sample like PPO's (experiments/toylab_ppo.py: temperature 0.7, 24 new tokens, the same test
prompts), so DPO's gold reward and KL land on the same reward vs √KL axes as the online methods.

Hyperparameters follow Rafailov et al. 2023 ("Direct Preference Optimization", §6 and App. B) where they
transfer: β = 0.1, batch 64, a linear warm-up, then a constant learning rate. Their 1e-6 (RMSprop, 150
warm-up steps) is for 1-6B-parameter models; the toy policy (64 wide, 2 layers, trained from scratch at
2e-3) needs a larger step, so the rate and warm-up are scaled down to the toy lab's ~250 steps here.
Run time: about 100 s on a 2-core CPU (measured 96-109 s for dpo, ipo, cdpo and ranked lists, RM given).
"""

import ml_collections

from rlhfjax.config_blocks import (
    data_config, distributed_config, mesh_config, optim_config, toy_model_config, train_config)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Comparisons: the toy lab's annotator pool (or HH: --config.data.source=Anthropic/hh-rlhf
    # --config.data.data_dir=helpful-base, or local json/jsonl/parquet files), eval_split for held-out pairs
    # and prompts; data.eval_limit caps the eval pairs.
    c.data = data_config("toylab")
    c.data.data_dir = "mixed"  # annotator pool: helpful | harmless | mixed | generic
    c.data.ranked_lists = False  # True: train on every pair (i better than j) of the ranked lists
    c.data.max_response_len = 32  # tokens incl. EOS (the SFT policy's); longer responses are cut
    c.tokenizer = ml_collections.ConfigDict({"path": ""})  # "" = the toy lab's, else the policy's

    c.policy = ml_collections.ConfigDict()
    c.policy.init_from = "runs/toylab/sft/model"  # initial policy AND frozen reference (HF/rlhfjax LM dir)
    c.policy.dtype = "float32"  # compute dtype of policy and reference (and of the RM, if given)
    c.policy.scan_layers = False  # policy, reference and RM: one scanned block, params stacked
    c.policy.remat_policy = "none"  # policy, reference and RM: per-block remat (as model.remat_policy)
    # LM head and log-softmax over this many positions at a time (recomputed in the backward): memory
    # batch × chunk × vocab instead of batch × length × vocab for each of chosen and rejected; 0 = all at once
    c.policy.logits_chunk = 0

    c.reward = ml_collections.ConfigDict()  # evaluation only: DPO trains without a reward model
    c.reward.init_from = ""  # an RM dir (e.g. runs/toylab/rm/model) adds eval/reward/proxy; "" = none
    c.reward.normalise = True  # proxy normalised as PPO's: mean 0, std 1 under the initial policy
    c.reward.norm_batches = 8  # batches of eval.batch_size rollouts the normaliser is fitted on (as online methods')

    c.dpo = ml_collections.ConfigDict()
    c.dpo.loss = "dpo"  # dpo (Rafailov et al. 2023) | ipo (Azar et al. 2023) | cdpo (label smoothing)
    c.dpo.beta = 0.1  # DPO's β (Rafailov et al.: 0.1); IPO's τ (target Δ = 1/(2β))
    c.dpo.label_smoothing = 0.0  # cdpo's ε, the assumed label-flip rate, in (0, 0.5) (DPO code's label_smoothing)
    c.dpo.reference_on_the_fly = False  # True: reference params on device, log-probs each step (no stored column)
    c.dpo.reference_batch_size = 0  # pairs per batch of the one-off reference pass; 0 = train.batch_size

    # Held-out sampling evals (every train.eval_every steps, the last step and step 0), as PPO's.
    c.eval = ml_collections.ConfigDict()
    c.eval.prompt_limit = 400  # eval_split prompt rows read, as PPO's data.eval_limit (same prompts); 0 = off
    c.eval.batch_size = 32  # = the online methods' train.eval_batch_size: the same prompts and sampling keys as theirs
    c.eval.temperature = 0.7  # = PPO's rollout temperature (lm-human-preferences); KL is of the T-scaled models
    c.eval.top_p = 1.0
    c.eval.max_new_tokens = 24  # = PPO's fixed response length on the toy lab
    c.eval.kl_estimator = "k1"  # k1 | k2 | k3 (objectives.core.kl_per_token), as PPO's kl.estimator
    c.eval.chunk_size = 0  # > 0: teacher-forced eval phases this many rows at a time (memory)
    c.eval.at_start = True  # evaluate the initial policy as step 0 (a fresh run's baseline)

    # Architecture of a random policy, used only when policy.init_from is empty (the smoke variant).
    c.model = toy_model_config()
    c.model.hidden_size = 32
    c.model.intermediate_size = 64

    c.optim = optim_config()
    c.optim.learning_rate = 1e-4  # Rafailov et al.: 1e-6 for 1-6B models; the 64-wide toy policy needs more
    c.optim.warmup_steps = 20  # Rafailov et al.: 150 steps of 64 pairs; scaled to the toy run
    c.optim.schedule = "constant"  # after warm-up, as Rafailov et al.
    c.optim.total_steps = 0  # 0 = train.steps

    c.train = train_config(steps=250, batch_size=64, eval_every=25)
    c.mesh = mesh_config()  # dp over all local devices; --config.mesh.strategy=fsdp|tp|custom
    c.distributed = distributed_config()  # multi-process runs: `rlhfjax.distributed`

    if arg == "smoke":  # stands alone: a random tiny policy (pass policy.init_from to use a real one)
        c.policy.init_from = ""
        c.data.limit = 64
        c.data.eval_limit = 16
        c.eval.prompt_limit = 16
        c.eval.batch_size = 8
        c.eval.max_new_tokens = 8
        c.train = train_config(steps=4, batch_size=8, eval_every=2)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
