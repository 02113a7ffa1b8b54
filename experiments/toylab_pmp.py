"""Preference-model pre-training (PMP, Askell et al. 2021 §4) on the toy lab: two `rm` stages.

    rlhfjax pmp --config experiments/toylab_pmp.py --workdir runs/toylab/pmp \
        --config.model.init_from=runs/toylab/sft/model
    rlhfjax pmp --config experiments/toylab_pmp.py:smoke --workdir /tmp/pmp_smoke   # random tiny model

Stage 1 (`<workdir>/pretrain`) trains a PM on the toy lab's `generic` comparisons (8,000 fresh pairs,
noisier and more length/politeness-biased annotators) starting from `model.init_from` (an LM); stage 2
(`<workdir>/finetune`) starts from stage 1's exported PM and trains on the target pool `data.data_dir`.
Each stage is an ordinary `rlhfjax rm` run directory (metrics.jsonl, summary.json, model/); a
finished stage is skipped when the command is run again, an interrupted one resumes.

The top level of this config is the stage-2 (`rlhfjax rm`) config; `pretrain.*` lists what stage 1
changes. Stage 2's `summary.json["init"]` is the pre-trained PM's accuracy on the target pool before
fine-tuning. scripts/pm_study.py measures what PMP buys as a function of target-set size.
"""

import ml_collections

from rlhfjax.config_blocks import data_config, toy_model_config, train_config
from rlhfjax.train import default_optim_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data_config("toylab")
    c.data.data_dir = "mixed"  # target annotator pool (stage 2): helpful | harmless | mixed
    c.data.ranked_lists = False  # stage 2 only: Plackett-Luce on the toy lab's ranked lists
    c.data.num_responses = 4  # K of ranked lists
    c.tokenizer = ml_collections.ConfigDict({"path": ""})
    c.model = toy_model_config()  # model.init_from: the LM stage 1 starts from ("" = random preset)

    c.pm = ml_collections.ConfigDict()
    c.pm.objective = "ranked"  # stage 2: ranked | binary (from a scalar PMP model) | imitation (from an LM one)
    c.pm.lm_coef = 0.0  # must stay 0: a PM with an LM head is not exported, so stage 2 could not load it

    c.optim = default_optim_config()
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 20
    c.optim.schedule = "cosine"
    c.optim.total_steps = 0  # 0 = train.steps (stage 1: always its own pretrain.steps)

    c.train = train_config(steps=250, batch_size=32, eval_every=50)  # stage 2

    p = c.pretrain = ml_collections.ConfigDict()  # stage 1: the stage-2 config with these fields replaced
    p.data_dir = "generic"  # the toy lab's PMP comparisons (any comparisons folder under data.source works)
    p.objective = "ranked"  # ranked | binary -> a scalar PM (stage 2 ranked/binary); imitation -> an LM
    p.steps = 500  # two epochs of the 8,000 generic pairs at batch 32
    p.batch_size = 32
    p.learning_rate = 5e-4
    p.limit = 0  # generic train rows read; 0 = all
    p.eval_every = 100  # stage 1 evaluates on the generic test split

    if arg == "smoke":
        c.data.limit = 128
        c.data.eval_limit = 32
        c.model.hidden_size = 32
        c.model.intermediate_size = 64
        c.train = train_config(steps=4, batch_size=8, eval_every=2)
        p.steps, p.batch_size, p.limit, p.eval_every = 4, 8, 128, 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
