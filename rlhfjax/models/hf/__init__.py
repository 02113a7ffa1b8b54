"""Hugging Face interop: config.json + safetensors <-> (ModelConfig, params).

- `config_map.py`: HF `PretrainedConfig` <-> `ModelConfig`;
- `weights.py`: per-family weight-name tables, params <-> HF state dict, expected shapes;
- `checkpoint.py`: hub ids / local directories, reading, validating and writing safetensors
  checkpoints (LM and scalar models), tokenizers; `safetensors_io.py`: the safetensors reader/writer.

The public names below are what `from rlhfjax.models.hf import ...` has always offered.
"""

from rlhfjax.models.hf.checkpoint import (SAFE_INDEX, SAFE_SINGLE, SCORE, load_hf_config, load_pretrained,
                                          load_pretrained_scalar, save_pretrained,
                                          save_pretrained_scalar)
from rlhfjax.models.hf.config_map import config_from_hf, config_to_hf
from rlhfjax.models.hf.weights import expected_hf_shapes, expected_param_shapes, from_hf_state_dict, to_hf_state_dict

__all__ = ["SAFE_INDEX", "SAFE_SINGLE", "SCORE", "config_from_hf", "config_to_hf", "expected_hf_shapes",
           "expected_param_shapes", "from_hf_state_dict", "load_hf_config", "load_pretrained",
           "load_pretrained_scalar", "save_pretrained", "save_pretrained_scalar",
           "to_hf_state_dict"]
