"""Train a tiny decoder LM from scratch on a text corpus and print greedy samples.

With no `data.text_path`, the corpus is a seeded synthetic language built in, so this runs
offline in about 25 s on a 2-core CPU (21 s of it in the run, compiling included):

    rlhfjax lm --config experiments/lm_tiny.py --workdir runs/lm_tiny
    rlhfjax lm --config experiments/lm_tiny.py:smoke --workdir /tmp/lm_smoke   # seconds

Fine-tune an HF checkpoint instead: `--config.model.init_from=EleutherAI/pythia-70m`
(hub id or local directory; its tokenizer is used and the architecture fields are ignored).
"""

import ml_collections

from rlhfjax.config_blocks import distributed_config, mesh_config, optim_config, toy_model_config, train_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.text_path = ""  # one document per line (.txt) or {"text": ...} per line (.jsonl); "" = built-in
    c.data.num_synthetic = 4000  # documents generated for the built-in corpus
    c.data.seq_len = 48  # documents are packed into rows of this many tokens
    c.data.eval_fraction = 0.05  # held out for eval loss

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.path = ""  # HF tokenizer (hub id or dir); "" = train a word-level one on the corpus

    c.model = toy_model_config()  # model.init_from: an HF checkpoint to start from; "" = this architecture, random
    c.model.max_position_embeddings = 128

    c.optim = optim_config()
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 20
    c.optim.schedule = "cosine"
    c.optim.weight_decay = 0.01

    c.train = train_config(steps=300, batch_size=32, eval_every=100)
    c.mesh = mesh_config()  # dp over all local devices; --config.mesh.strategy=fsdp|tp|custom
    c.distributed = distributed_config()  # multi-process runs: `rlhfjax.distributed`

    c.sample = ml_collections.ConfigDict()
    c.sample.num_prompts = 4  # corpus prefixes continued greedily after training
    c.sample.prompt_tokens = 4
    c.sample.max_new_tokens = 16

    if arg == "smoke":  # shrink everything for tests and debugging
        c.data.num_synthetic = 300
        c.data.seq_len = 24
        c.model.hidden_size = 32
        c.model.intermediate_size = 64
        c.train = train_config(steps=6, batch_size=8, eval_every=3)
        c.sample.num_prompts = 2
        c.sample.max_new_tokens = 6
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    c.optim.total_steps = 0  # 0 = train.steps (decay over the whole run)
    return c
