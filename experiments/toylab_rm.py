"""Preference model on the toy lab's simulated comparisons (Askell et al. 2021 objectives).

    rlhfjax rm --config experiments/toylab_rm.py --workdir runs/toylab/rm \
        --config.model.init_from=runs/toylab/sft/model
    rlhfjax rm --config experiments/toylab_rm.py --config.rm.objective=imitation ...   # baseline
    rlhfjax rm --config experiments/toylab_rm.py --config.data.data_dir=harmless ...   # annotator pool

Without `model.init_from` the PM starts from a random preset (fine for smoke tests, worse PMs).
Bai et al. 2022 train PMs for one epoch; the defaults here do about two over 4,000 comparisons.
"""

import ml_collections

from rlhfjax.config_blocks import (
    data_config, distributed_config, mesh_config, optim_config, toy_model_config, train_config)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data_config("toylab")
    c.data.data_dir = "mixed"  # annotator pool: helpful | harmless | mixed
    c.data.ranked_lists = False  # True: Plackett-Luce on the toy lab's ranked lists (objective "ranked")
    c.data.num_responses = 4  # K of ranked lists (static shape; shorter lists are masked)
    c.tokenizer = ml_collections.ConfigDict({"path": ""})
    c.model = toy_model_config()

    c.rm = ml_collections.ConfigDict()
    c.rm.objective = "ranked"  # ranked (Bradley-Terry) | binary (discrimination) | imitation (LM on chosen)
    c.rm.lm_coef = 0.0  # > 0: auxiliary LM loss on the chosen response (ranked/binary)
    # > 0: hold out this fraction of the training pairs (a fixed draw from `seed`) for validation at every
    # eval (every epoch with train.epochs) and export the params with the best validation metric, the
    # initial ones included (early stopping); the eval pairs are then scored every train.eval_every steps
    c.rm.val_fraction = 0.0
    c.rm.select_by = "loss"  # validation metric for that: loss (the objective's, lower wins) | accuracy
    c.rm.freeze_backbone_steps = 0  # > 0: only the fresh scalar head trains for this many first steps

    c.optim = optim_config()
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 20
    c.optim.schedule = "cosine"
    c.optim.total_steps = 0  # 0 = train.steps

    c.train = train_config(steps=250, batch_size=32, eval_every=50)
    c.mesh = mesh_config()  # dp over all local devices; --config.mesh.strategy=fsdp|tp|custom
    c.distributed = distributed_config()  # multi-process runs: `rlhfjax.distributed`

    if arg == "smoke":
        c.data.limit = 128
        c.data.eval_limit = 32
        c.model.hidden_size = 32
        c.model.intermediate_size = 64
        c.train = train_config(steps=4, batch_size=8, eval_every=2)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    # > 0: this many passes over the training pairs instead of train.steps (each pair once per epoch, the
    # last batch padded); evals then run at every epoch's end
    c.train.epochs = 0
    return c
