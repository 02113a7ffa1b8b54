"""SFT of a small policy on the toy lab's demonstrations (offline, a few minutes on 2 CPU cores).

    rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft
    rlhfjax sft --config experiments/toylab_sft.py:smoke --workdir /tmp/sft_smoke

The policy is trained from scratch (the toy language is small); its export in `<workdir>/model`
is the initial policy and reference for RM and PPO runs.
"""

import ml_collections

from rlhfjax.config_blocks import (
    data_config, distributed_config, mesh_config, optim_config, sample_config, toy_model_config,
    train_config)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data_config("toylab")
    c.tokenizer = ml_collections.ConfigDict({"path": ""})  # "" = the toy lab's (or init_from's) tokenizer
    c.model = toy_model_config()

    c.optim = optim_config()
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 30
    c.optim.schedule = "cosine"
    c.optim.weight_decay = 0.01
    c.optim.total_steps = 0  # 0 = train.steps

    c.train = train_config(steps=600, batch_size=32, eval_every=200)
    c.mesh = mesh_config()  # dp over all local devices; --config.mesh.strategy=fsdp|tp|custom
    c.distributed = distributed_config()  # multi-process runs: `rlhfjax.distributed`
    c.sample = sample_config()

    if arg == "smoke":
        c.data.limit = 256
        c.data.eval_limit = 32
        c.model.hidden_size = 32
        c.model.intermediate_size = 64
        c.train = train_config(steps=4, batch_size=8, eval_every=2)
        c.sample.num_prompts = 8
        c.sample.max_new_tokens = 8
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
