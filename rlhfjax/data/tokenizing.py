"""A config's tokenizer and encoder, and sampled responses back to text: the same rules for every
command, offline and online."""

from __future__ import annotations

import os

from rlhfjax.data.batching import Encoder, TokenizeConfig
from rlhfjax.data.sources import ensure_toylab, is_toylab
from rlhfjax.errors import ConfigError


def tokenizer_for(config, init_from: str = ""):
    """`tokenizer.path`, else the toy lab's tokenizer, else that of the model the run starts from."""
    from rlhfjax.models.hf import load_tokenizer

    if config.tokenizer.path:
        return load_tokenizer(config.tokenizer.path)
    if is_toylab(config.data):
        ensure_toylab(config.data.toylab_dir, config.data.toylab_seed)
        return load_tokenizer(os.path.join(config.data.toylab_dir, "tokenizer"))
    if init_from:
        return load_tokenizer(init_from)
    raise ConfigError("no tokenizer", "set tokenizer.path or the initial model's init_from (or use data.source='toylab')")


def encoder_for(config, tokenizer) -> Encoder:
    """Tokenization with `data.max_prompt_len`, `data.max_response_len` and `data.template`."""
    return Encoder(tokenizer, TokenizeConfig(max_prompt_len=config.data.max_prompt_len,
                                             max_response_len=config.data.max_response_len,
                                             template=config.data.template))


def decode_responses(tokenizer, rollout) -> list[str]:
    """The text of each sampled response of a `sampling.Rollout` (all rows, gathered from every process)."""
    from rlhfjax.parallel import host  # deferred: data code does not otherwise need a backend

    return decode_rows(tokenizer, host(rollout.tokens_BxN), host(rollout.response_mask_BxN))


def decode_rows(tokenizer, tokens_BxN, mask_BxN) -> list[str]:
    """The text of each row's masked tokens (host arrays), special tokens dropped."""
    mask_BxN = mask_BxN.astype(bool)
    return [tokenizer.decode(t[m], skip_special_tokens=True).strip() for t, m in zip(tokens_BxN, mask_BxN)]
