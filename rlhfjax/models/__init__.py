"""Decoder models: config, Linen modules, scalar heads and Hugging Face interop."""

from rlhfjax.models.config import SUPPORTED_FAMILIES, ModelConfig, preset
from rlhfjax.models.heads import (ScalarModel, ValueHead, init_scalar_params, init_value_head, last_token_index,
                                  read_at)
from rlhfjax.models.transformer import (DecoderOutput, Transformer, init_cache, init_params,
                                        positions_from_mask, stack_layers, unstack_layers)

__all__ = [
    "SUPPORTED_FAMILIES", "ModelConfig", "preset", "ScalarModel", "ValueHead", "init_scalar_params", "init_value_head",
    "last_token_index", "read_at", "DecoderOutput", "Transformer", "init_cache", "init_params",
    "positions_from_mask", "stack_layers", "unstack_layers"]
