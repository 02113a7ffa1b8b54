"""HH-RLHF at scale: the model and hardware tables behind experiments/hh_{sft,rm,ppo,superhf}.py.

A config string names a model and a target: `experiments/hh_ppo.py:pythia-1.4b,tpu-v5e-64`. The pipeline is
SFT → RM (from the SFT export) → PPO or SuperHF (policy and reference = the SFT export, reward = the RM
export), on Anthropic/hh-rlhf, following Bai et al. 2022's recipe scaled to 1-2B models.

Sizes per device come from docs/memory.md (scripts/memory_table.py): the fp32 training state of a 1.4B
model is 21 GiB unsharded, so every target shards it (FSDP). The activations, not the state, then set the
batch per device: at a sequence of 512 tokens, the fp32 logits alone are 512 × vocab × 4 bytes per
sequence (Pythia's 50k vocab: 100 MB; Qwen's 152k: 310 MB), kept for the backward pass.

`smoke` shrinks a config to a tiny random model on the toy lab (HH-format transcripts, no download) with
the target's mesh scaled to 8 devices, scanned layers and its remat policy: the suite runs it on 8 CPU
devices so the configs cannot rot.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from rlhfjax.config_blocks import distributed_config, mesh_config as mesh_config_defaults
from rlhfjax.errors import ConfigError

STAGES = ("sft", "rm", "ppo", "superhf")


@dataclasses.dataclass(frozen=True)
class Model:
    hub_id: str
    note: str


MODELS = {
    # GPT-NeoX, 24 layers × 2048, vocab 50,304; Pythia's dedup run is the usual RLHF base at this size.
    "pythia-1.4b": Model("EleutherAI/pythia-1.4b-deduped", "GPT-NeoX 1.4B, 50k vocab"),
    # Qwen2, 28 layers × 1536, GQA (2 KV heads), tied embeddings, vocab 151,936. A Llama-3.2-1B checkpoint
    # (same layout, gated on the hub) drops in with --config.model.init_from / --config.policy.init_from.
    "qwen2.5-1.5b": Model("Qwen/Qwen2.5-1.5B", "Qwen2 1.5B, 152k vocab"),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """One stage on one target. `batch` is global (sequences, pairs or prompts per step or iteration);
    per device it is batch / (data × fsdp), split into `accum` micro-batches."""
    mesh: dict
    batch: int
    accum: int
    remat: str
    why: str


@dataclasses.dataclass(frozen=True)
class Target:
    devices: int
    memory_gib: float
    note: str
    plans: dict  # stage -> Plan


FSDP8 = {"strategy": "fsdp"}
TARGETS = {
    "gpu-8": Target(8, 80.0, "one node of 8 × H100/A100 80GB, one process (no jax.distributed)", {
        # FSDP over the node's NVLink: state 2.6 GiB/device (1.4B). 8 sequences of 512 per device, two
        # micro-batches of 4: the Qwen logits (4 × 310 MB fp32, plus their gradient) stay far below 80 GB.
        # Saving the matmul outputs (dots) avoids recomputing them: the cheap elementwise work is redone.
        "sft": Plan(FSDP8, 64, 2, "dots_saveable", "8 seqs/device, 2 micro-batches of 4"),
        "rm": Plan(FSDP8, 64, 2, "dots_saveable", "8 pairs/device (16 seqs), 2 micro-batches; no logits"),
        # Policy + value trainable, reference + RM frozen: 6.4 GiB state/device. 128 prompts → 16/device per
        # rollout; 4 minibatches of 32 → 4/device per optimizer step.
        "ppo": Plan(FSDP8, 128, 1, "dots_saveable", "16 prompts/device sampled, 4/device per minibatch"),
        # 32 prompts × 16 completions sampled = 64 sequences/device; the kept best (1/prompt) → 4/device.
        "superhf": Plan(FSDP8, 32, 1, "dots_saveable", "64 completions/device sampled, 4 kept/device"),
    }),
    "tpu-v4-32": Target(16, 32.0, "16 chips (4 hosts × 4), 32 GiB HBM each; one process per host", {
        # FSDP over all 16 chips (ICI all-gathers are cheap at this size): state 1.3 GiB/chip. 4 sequences
        # per chip in one pass; dots saved as on GPU (32 GiB is ample for 4 × 512 with them).
        "sft": Plan({"strategy": "fsdp"}, 64, 1, "dots_saveable", "4 seqs/chip"),
        "rm": Plan({"strategy": "fsdp"}, 64, 1, "dots_saveable", "4 pairs/chip (8 seqs)"),
        "ppo": Plan({"strategy": "fsdp"}, 128, 1, "dots_saveable", "8 prompts/chip sampled, 2/chip per minibatch"),
        "superhf": Plan({"strategy": "fsdp"}, 32, 1, "dots_saveable", "32 completions/chip sampled, 2 kept/chip"),
    }),
    "tpu-v5e-64": Target(64, 16.0, "64 chips (16 hosts × 4), 16 GiB HBM each; one process per host", {
        # 4 data-parallel groups × FSDP over 16 chips: parameters are gathered within a group of 16 instead
        # of across all 64, and the state is still 1/16 per chip (1.3 GiB at 1.4B, 3.2 GiB for PPO). With
        # 16 GiB per chip, full remat (nothing saved but each layer's input) keeps activations small.
        "sft": Plan({"strategy": "custom", "data": 4, "fsdp": 16, "tensor": 1}, 128, 1, "nothing_saveable",
                    "2 seqs/chip"),
        "rm": Plan({"strategy": "custom", "data": 4, "fsdp": 16, "tensor": 1}, 128, 1, "nothing_saveable",
                   "2 pairs/chip (4 seqs)"),
        "ppo": Plan({"strategy": "custom", "data": 4, "fsdp": 16, "tensor": 1}, 256, 1, "nothing_saveable",
                    "4 prompts/chip sampled, 1/chip per minibatch"),
        "superhf": Plan({"strategy": "custom", "data": 4, "fsdp": 16, "tensor": 1}, 64, 1, "nothing_saveable",
                        "16 completions/chip sampled, 1 kept/chip"),
    }),
}
DEFAULT = ("pythia-1.4b", "gpu-8")
SMOKE_DEVICES = 8


def parse(arg: str) -> tuple[str, str, bool]:
    """`model,target[,smoke]` (any order; either may be left out: DEFAULT) → (model, target, smoke)."""
    parts = [p for p in arg.split(",") if p] if arg else []
    model, target, smoke = *DEFAULT, False
    for p in parts:
        if p in MODELS:
            model = p
        elif p in TARGETS:
            target = p
        elif p == "smoke":
            smoke = True
        else:
            raise ValueError(f"unknown config variant part {p!r}; models: {', '.join(MODELS)}; targets: "
                             f"{', '.join(TARGETS)}; or smoke")
    return model, target, smoke


def mesh_config(mesh: dict, devices: int | None = None) -> ml_collections.ConfigDict:
    """The plan's mesh; with `devices` (a smoke run) the same layout shrunk to that many devices."""
    c = mesh_config_defaults()
    c.update(mesh)
    if devices is not None and c.strategy == "custom":  # keep the data × fsdp shape, fewer devices
        c.data, c.fsdp, c.tensor = max(1, c.data // 2), -1, 1
    return c


def plan(stage: str, target: str) -> Plan:
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
    return TARGETS[target].plans[stage]


# Stage lengths and sizes (Bai et al. 2022: responses up to 128 tokens; one epoch over ~160k comparisons).
PROMPT_TOKENS = {"sft": 384, "rm": 384, "ppo": 256, "superhf": 256}
RESPONSE_TOKENS = 128
LOGITS_CHUNK = 64  # response positions per LM-head chunk (ModelConfig.logits_chunk)
STEPS = {"sft": 2500, "rm": 2500, "ppo": 500, "superhf": 500}  # sft/rm: ~1 epoch at batch 64; online: iterations


def build(stage: str, arg: str, toylab_config) -> ml_collections.ConfigDict:
    """The `stage` config for `arg` (`parse`), made from the toy-lab config of the same stage
    (`toylab_config(variant)`), whose method sections (objective, KL, PPO, SuperHF) it keeps."""
    model, target, smoke = parse(arg)
    p = plan(stage, target)
    c = toylab_config("smoke" if smoke else "")
    c.mesh = mesh_config(p.mesh, SMOKE_DEVICES if smoke else None)
    c.distributed = distributed_config()
    c.optim.grad_accum_steps = p.accum
    family = {"pythia-1.4b": "gpt_neox", "qwen2.5-1.5b": "qwen2"}[model]
    online = stage in ("ppo", "superhf")
    execution = c.policy if online else c.model
    execution.dtype = "bfloat16"  # matmuls in bf16, params and optimizer state in fp32
    execution.scan_layers = True  # one compiled block for all layers: compile time independent of depth
    execution.remat_policy = p.remat
    # The LM head over 64 positions at a time: at a 50k vocabulary a whole-sequence loss (SFT, the RM's LM term)
    # would hold micro-batch × 512 × 50k fp32 logits, a few GB per device; +3% update time (docs/benchmarks.md)
    execution.logits_chunk = LOGITS_CHUNK
    if smoke:  # tiny random models on the toy lab; the target's mesh layout on 8 devices, same accumulation
        c.model.family = family
        if family == "gpt_neox":
            c.model.num_kv_heads = None  # GPT-NeoX has no grouped-query attention
        c.train.batch_size = max(c.train.batch_size, SMOKE_DEVICES * p.accum)
        return c

    runs = f"runs/hh/{model}"
    c.data.source = "Anthropic/hh-rlhf"
    c.data.data_dir = ""  # every subset (helpful-base, harmless-base, helpful-online, helpful-rejection-sampled)
    c.data.template = "hh"  # base models: the plain Human:/Assistant: transcript
    c.data.max_prompt_len = PROMPT_TOKENS[stage]
    c.data.max_response_len = RESPONSE_TOKENS
    c.data.eval_limit = 2000
    c.train.batch_size = p.batch
    c.train.eval_every = STEPS[stage] // 10
    c.train.save_every = STEPS[stage] // 10
    if online:
        c.train.iterations = STEPS[stage]
        c.train.eval_batch_size = p.batch
        c.policy.init_from = f"{runs}/sft/model"
        c.reward.init_from = f"{runs}/rm/model"
        # PPO: Bai et al. 2022 use 0.01 × the pre-training LR (Pythia-1.4B: 2e-4); SuperHF: its paper's 2e-5.
        c.optim.learning_rate = 2e-6 if stage == "ppo" else 2e-5
    else:
        c.train.steps = STEPS[stage]
        c.model.family = family
        c.model.init_from = MODELS[model].hub_id if stage == "sft" else f"{runs}/sft/model"
        c.optim.learning_rate = 1e-5
        c.optim.warmup_steps = 100
    if stage == "ppo":
        c.kl.controller, c.kl.init_coef = "fixed", 0.001  # Bai et al. 2022: λ_KL = 0.001
        c.value.init_from = ""  # the RM, as the toy-lab config
    return c
