"""Preference-model pre-training (PMP, Askell et al. 2021 §4) on the toy lab: two `rm` stages.

    rlhfjax pmp --config experiments/toylab_pmp.py --workdir runs/toylab/pmp \
        --config.model.init_from=runs/toylab/sft/model
    rlhfjax pmp --config experiments/toylab_pmp.py:smoke --workdir /tmp/pmp_smoke   # random tiny model

Stage 1 (`<workdir>/pretrain`) trains a PM on the toy lab's `generic` comparisons (8,000 fresh pairs,
noisier and more length/politeness-biased annotators) starting from `model.init_from` (an LM); stage 2
(`<workdir>/finetune`) starts from stage 1's exported PM and trains on the target pool `data.data_dir`.
Each stage is an ordinary `rlhfjax rm` run directory (metrics.jsonl, summary.json, model/); a
finished stage is skipped when the command is run again, an interrupted one resumes.

The top level of this config is experiments/toylab_rm.py itself (stage 2; `model.init_from` is the LM
stage 1 starts from, `rm.objective` ranked/binary fine-tunes a scalar PMP model and imitation an LM
one, `rm.lm_coef` must stay 0); `pretrain.*` lists what stage 1 changes. Stage 2's `summary.json["init"]` is the pre-trained PM's accuracy on the target pool before
fine-tuning. scripts/pm_study.py measures what PMP buys as a function of target-set size.
"""

import os

import ml_collections

from rlhfjax.config import load_config_file

RM_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toylab_rm.py")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = load_config_file(f"{RM_CONFIG}:{arg}" if arg else RM_CONFIG)  # stage 2 (unknown variants fail there)

    p = c.pretrain = ml_collections.ConfigDict()  # stage 1: the stage-2 config with these fields replaced
    p.data_dir = "generic"  # the toy lab's PMP comparisons (any comparisons folder under data.source works)
    p.objective = "ranked"  # ranked | binary -> a scalar PM (stage 2 ranked/binary); imitation -> an LM
    p.steps = 500  # two epochs of the 8,000 generic pairs at batch 32
    p.batch_size = 32
    p.learning_rate = 5e-4
    p.limit = 0  # generic train rows read; 0 = all
    p.eval_every = 100  # stage 1 evaluates on the generic test split
    if arg == "smoke":
        p.steps, p.batch_size, p.limit, p.eval_every = 4, 8, 128, 2
    return c
