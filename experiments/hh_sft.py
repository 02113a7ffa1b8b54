"""Supervised fine-tuning on HH-RLHF's chosen responses, at scale.

    rlhfjax sft --config experiments/hh_sft.py:pythia-1.4b,gpu-8 --workdir runs/hh/pythia-1.4b/sft
    ZONE=us-central2-b scripts/launch_tpu_pod.sh my-v5e-64 sft experiments/hh_sft.py:qwen2.5-1.5b,tpu-v5e-64 \
        /mnt/shared/runs/hh/qwen2.5-1.5b/sft
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        rlhfjax sft --config experiments/hh_sft.py:smoke,tpu-v5e-64 --workdir /tmp/hh_sft_smoke   # tiny, 8 CPU devices

Variant: `model,target` with model pythia-1.4b | qwen2.5-1.5b and target gpu-8 | tpu-v4-32 | tpu-v5e-64
(default pythia-1.4b,gpu-8); add `smoke` for the tiny toy-lab version of that target's layout. The mesh,
global batch, per-device batch, gradient accumulation and remat policy of each target, and why, are the table
in rlhfjax/scale_configs.py; memory per device is docs/memory.md. Everything else is the toy-lab config of the
same stage (experiments/toylab_sft.py). Run paths are per model: its export in <workdir>/model is the RM's
start and the PPO/SuperHF policy and reference.
"""

import os

from rlhfjax.config import load_config_file
from rlhfjax.scale_configs import build


def get_config(arg: str = ""):
    toylab = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toylab_sft.py")
    return build("sft", arg, lambda variant: load_config_file(f"{toylab}:{variant}" if variant else toylab))
