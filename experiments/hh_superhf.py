"""SuperHF against the HH preference model from the SFT policy (Mukobi et al. 2023), at scale.

    rlhfjax superhf --config experiments/hh_superhf.py:pythia-1.4b,gpu-8 --workdir runs/hh/pythia-1.4b/superhf
    ZONE=us-central2-b scripts/launch_tpu_pod.sh my-v5e-64 superhf experiments/hh_superhf.py:qwen2.5-1.5b,tpu-v5e-64 \
        /mnt/shared/runs/hh/qwen2.5-1.5b/superhf
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        rlhfjax superhf --config experiments/hh_superhf.py:smoke,tpu-v5e-64 --workdir /tmp/hh_superhf_smoke   # tiny, 8 CPU devices

Variant: `model,target` with model pythia-1.4b | qwen2.5-1.5b and target gpu-8 | tpu-v4-32 | tpu-v5e-64
(default pythia-1.4b,gpu-8); add `smoke` for the tiny toy-lab version of that target's layout. The mesh,
global batch, per-device batch, gradient accumulation and remat policy of each target, and why, are the table
in rlhfjax/scale_configs.py; memory per device is docs/memory.md. Everything else is the toy-lab config of the
same stage (experiments/toylab_superhf.py). Run paths are per model: needs runs/hh/<model>/sft and
runs/hh/<model>/rm.
"""

import os

from rlhfjax.config import load_config_file
from rlhfjax.scale_configs import build


def get_config(arg: str = ""):
    toylab = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toylab_superhf.py")
    return build("superhf", arg, lambda variant: load_config_file(f"{toylab}:{variant}" if variant else toylab))
