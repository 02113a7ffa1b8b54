"""Tokenizers (a hub id's or a directory's), a config's tokenizer and encoder, and sampled responses back to
text: the same rules for every command, offline and online."""

from __future__ import annotations

import os

from rlhfjax.data.batching import Encoder, TokenizeConfig
from rlhfjax.data.sources import ensure_toylab, is_toylab
from rlhfjax.errors import ConfigError, MissingPathError


def load_tokenizer(name_or_path: str, revision: str | None = None):
    """`transformers.AutoTokenizer` from a hub id or directory, with a pad token guaranteed
    (falls back to EOS, the usual choice for GPT-2/Pythia/Llama which ship none)."""
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(os.path.expanduser(name_or_path), revision=revision)
    except OSError as e:
        raise MissingPathError(f"could not load a tokenizer from {name_or_path!r} ({type(e).__name__})",
                               "pass a local directory holding tokenizer files (tokenizer.json or the "
                               "model's vocab files), or set tokenizer.path") from e
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_for(config, init_from: str = ""):
    """`tokenizer.path`, else the toy lab's tokenizer, else that of the model the run starts from."""
    if config.tokenizer.path:
        return load_tokenizer(config.tokenizer.path)
    if is_toylab(config.data):
        ensure_toylab(config.data.toylab_dir, config.data.toylab_seed)
        return load_tokenizer(os.path.join(config.data.toylab_dir, "tokenizer"))
    if init_from:
        return load_tokenizer(init_from)
    raise ConfigError("no tokenizer", "set tokenizer.path or the initial model's init_from (or use data.source='toylab')")


def encoder_for(config, tokenizer, *, with_context: bool = True) -> Encoder:
    """Tokenization with `data.max_prompt_len`, `data.max_response_len`, `data.template` and, unless
    `with_context` is False, the prompt context of `prompt.context_file` (`read_context`)."""
    return Encoder(tokenizer, TokenizeConfig(max_prompt_len=config.data.max_prompt_len,
                                             max_response_len=config.data.max_response_len,
                                             template=config.data.template),
                   context=read_context(config) if with_context else "")


def read_context(config) -> str:
    """The text of `prompt.context_file` ("" when unset or the config has no `prompt` section). Used as
    written, except trailing newlines: the prompt after it starts its own turn."""
    path = config.prompt.get("context_file", "") if "prompt" in config else ""
    if not path:
        return ""
    if not os.path.isfile(path):
        raise ConfigError(f"prompt.context_file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read().rstrip("\n")
    if not text.strip():
        raise ConfigError(f"prompt.context_file {path!r} is empty", "leave prompt.context_file unset for no context")
    return text


def decode_responses(tokenizer, rollout) -> list[str]:
    """The text of each sampled response of a `sampling.Rollout` (all rows, gathered from every process)."""
    from rlhfjax.parallel import host  # deferred: data code does not otherwise need a backend

    return decode_rows(tokenizer, host(rollout.tokens_BxN), host(rollout.response_mask_BxN))


def decode_rows(tokenizer, tokens_BxN, mask_BxN) -> list[str]:
    """The text of each row's masked tokens (host arrays), special tokens dropped."""
    mask_BxN = mask_BxN.astype(bool)
    return [tokenizer.decode(t[m], skip_special_tokens=True).strip() for t, m in zip(tokens_BxN, mask_BxN)]
