"""Config sections that several experiment files share (each field documented where it is set)."""

from __future__ import annotations

import ml_collections


def data_config(source: str = "toylab") -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.source = source  # "toylab", an HF hub id (e.g. Anthropic/hh-rlhf), or a local json/jsonl/parquet path
    d.data_dir = ""  # hub/local subset, e.g. "helpful-base"; for toy-lab comparisons: the annotator pool
    d.train_split = "train"
    d.eval_split = "test"
    d.limit = 0  # rows read from the train split; 0 = all
    d.eval_limit = 400  # rows read from the eval split; 0 = all
    d.toylab_dir = "runs/toylab/data"  # built on first use (seeded, ~5 s) and shared by every stage
    d.toylab_seed = 0
    d.max_prompt_len = 16  # tokens; prompts are cut from the left, keeping the final Assistant turn
    d.max_response_len = 32  # tokens incl. EOS; responses are cut on the right
    d.template = "auto"  # "hh" plain transcript | "chat" tokenizer's template | "auto": chat if defined
    return d


def toy_model_config() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.init_from = ""  # HF hub id or directory to start from; "" = random init of the preset below
    m.family = "llama"  # gpt2 | gpt_neox | llama | qwen2 (architecture switches of rlhfjax.models.preset)
    m.hidden_size = 64
    m.num_layers = 2
    m.num_heads = 4
    m.num_kv_heads = 2
    m.intermediate_size = 192
    m.max_position_embeddings = 64
    m.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
    return m


def train_config(steps: int, batch_size: int, eval_every: int) -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.steps = steps  # optimizer steps
    t.batch_size = batch_size  # examples per step (per process)
    t.log_every = max(1, eval_every // 4)
    t.eval_every = eval_every
    t.save_every = eval_every  # checkpoint period (the last step is always saved)
    t.keep_checkpoints = 2
    t.progress = False  # tqdm bar; off by default because logs are line-based
    return t


def online_train_config(iterations: int, batch_size: int, eval_every: int) -> ml_collections.ConfigDict:
    """`train` of an online method (online.runner): iterations, not optimizer steps, logged every one."""
    t = train_config(steps=0, batch_size=batch_size, eval_every=eval_every)
    del t["steps"]
    t.iterations = iterations  # sample → score → update rounds
    t.batch_size = batch_size  # prompts per iteration (per process)
    t.log_every = 1
    return t


def sample_config() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.num_prompts = 64  # eval prompts sampled at each eval
    s.max_new_tokens = 32
    s.temperature = 1.0
    s.top_p = 1.0
    return s
