"""Tokenization to fixed bucket lengths, collation into numpy batches, and a resumable batch iterator.

Batches are dicts of numpy arrays with shape-suffixed keys and explicit masks (see each ``collate_*``).
Prompt+response rows are right-padded to the smallest configured bucket that fits the longest row of the
batch, so a jitted step sees only ``len(buckets)`` shapes. Prompt-only batches (for the sampler) are
left-padded so every prompt ends at the same position. Every batch has ``row_mask_B``: 0 marks the padding
rows of a last partial batch (``drop_last=False``); all their token masks are 0 too.

Truncation: prompts lose whole early turns first and then tokens from the left, so the final Assistant turn
(the generation slot) always survives; responses are cut on the right (no EOS is added to a cut response,
so the model never learns to stop mid-sentence).

A prompt context (``Encoder(..., context=text)``, the config's ``prompt.context_file``) is a fixed text the
*policy* sees before every prompt it samples from: BOS, the context's tokens (the text encoded on its own,
without special tokens), then the prompt's own tokens after BOS, truncated as without a context — the
context is never cut, it adds its length to every prompt bucket. Prompt batches then also carry the prompt
without it (``plain_prompt_*``), for whatever judges the response (reward model, KL reference, gold).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
from typing import Any, Callable, Sequence

import numpy as np

from rlhfjax.choices import TEMPLATES
from rlhfjax.data.hh import HUMAN, parse_turns
from rlhfjax.data.examples import PreferencePair, PromptExample, RankedList, SFTExample
from rlhfjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    """Lengths and template for tokenization (all lengths in tokens)."""

    max_prompt_len: int = 256
    max_response_len: int = 128  # includes the EOS token
    buckets: tuple[int, ...] = ()  # prompt+response lengths; () -> default_buckets(max_prompt+max_response)
    prompt_buckets: tuple[int, ...] = ()  # prompt-only batches; () -> (max_prompt_len,): one sampler shape
    template: str = "auto"  # "hh": plain HH text; "chat": tokenizer.chat_template; "auto": chat if defined
    add_eos: bool = True  # append EOS to (untruncated) responses

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ConfigError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        total = self.max_prompt_len + self.max_response_len
        if self.buckets and max(self.buckets) < total:
            raise ConfigError(f"largest bucket {max(self.buckets)} < max_prompt_len + max_response_len {total}")
        if self.prompt_buckets and max(self.prompt_buckets) < self.max_prompt_len:
            raise ConfigError("largest prompt bucket < max_prompt_len")

    @property
    def seq_buckets(self) -> tuple[int, ...]:
        return tuple(sorted(self.buckets)) or default_buckets(self.max_prompt_len + self.max_response_len)

    @property
    def prompt_bucket_lengths(self) -> tuple[int, ...]:
        return tuple(sorted(self.prompt_buckets)) or (self.max_prompt_len,)


def default_buckets(max_len: int) -> tuple[int, ...]:
    """Three lengths: about a quarter, a half and all of ``max_len`` (quarters rounded up to 8)."""
    up8 = lambda n: max(8, 8 * math.ceil(n / 8))
    return tuple(sorted({min(up8(max_len / 4), max_len), min(up8(max_len / 2), max_len), max_len}))


# Set by `BatchIterator` while a multi-process run collates its rows: maps a local maximum length to the
# maximum over all processes, so every process pads its rows of a global batch to the same bucket.
_agree_length: Callable[[int], int] | None = None


def bucket_length(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket ≥ ``n`` (≥ every process's ``n`` while a multi-process iterator collates)."""
    if _agree_length is not None:
        n = _agree_length(n)
    for b in sorted(buckets):
        if b >= n:
            return b
    raise ConfigError(f"length {n} exceeds the largest bucket {max(buckets)}")


class Encoder:
    """Tokenizer + :class:`TokenizeConfig` → token ids for prompts and responses.

    ``stats`` counts truncations (``prompt_truncated``, ``response_truncated``) per *distinct* text encoded
    (encodings are cached, since pairs share prompts and epochs repeat).
    """

    def __init__(self, tokenizer, config: TokenizeConfig = TokenizeConfig(), context: str = ""):
        self.tokenizer = tokenizer
        self.config = config
        self.stats: collections.Counter = collections.Counter()
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        self.template = ("chat" if has_chat else "hh") if config.template == "auto" else config.template
        if self.template == "chat" and not has_chat:
            raise ConfigError("template='chat' but the tokenizer defines no chat_template")
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.pad_id is None:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        self.prompt_ids = functools.lru_cache(maxsize=1 << 16)(self._prompt_ids)
        self.response_ids = functools.lru_cache(maxsize=1 << 16)(self._response_ids)
        self.context = context
        if context and self.template != "hh":
            raise ConfigError("a prompt context needs the hh template (data.template='hh', or a tokenizer "
                              "without a chat template)", "for a chat model, put the context in a system turn")
        self.context_ids = tuple(self._encode_text(context, special=False)) if context else ()

    @property
    def prompt_buckets(self) -> tuple[int, ...]:
        """Padded lengths of prompt-only batches: the configured ones plus the context's length."""
        return tuple(b + len(self.context_ids) for b in self.config.prompt_bucket_lengths)

    def policy_prompt_ids(self, prompt: str) -> tuple[int, ...]:
        """The prompt as the policy samples from it: with the context (module docstring), if any."""
        ids = self.prompt_ids(prompt)
        if not self.context_ids:
            return ids
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids and ids[0] == bos:
            return (bos, *self.context_ids, *ids[1:])
        return (*self.context_ids, *ids)

    # -- prompts -------------------------------------------------------------------------------
    def _encode_text(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _render_chat(self, turns: list[tuple[str, str]]) -> list[int]:
        messages = [{"role": r, "content": c} for r, c in turns]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._encode_text(text, special=False)  # the template writes its own BOS

    def _candidates(self, prompt: str):
        """Renderings of the prompt with 0, 1, 2, … leading turns dropped (each starts with a user turn)."""
        if self.template == "hh":
            yield self._encode_text(prompt, special=True)
            starts = [m.start() for m in re.finditer(re.escape(HUMAN), prompt)]
            for s in starts[1:] if starts and starts[0] == 0 else starts:
                yield self._encode_text(prompt[s:], special=True)
        else:
            turns = parse_turns(prompt)
            system = turns[:1] if turns and turns[0][0] == "system" else []
            yield self._render_chat(turns)
            users = [i for i, (r, _) in enumerate(turns) if r == "user"]
            for i in users[1:]:
                yield self._render_chat(system + turns[i:])

    def _prompt_ids(self, prompt: str) -> tuple[int, ...]:
        limit = self.config.max_prompt_len
        for n, ids in enumerate(self._candidates(prompt)):
            if len(ids) <= limit:
                break
            if n == 0:
                self.stats["prompt_truncated"] += 1
        if len(ids) > limit:  # even the last user turn is too long: cut tokens, keep BOS + the end
            bos = self.tokenizer.bos_token_id
            keep_bos = bos is not None and ids[0] == bos and limit > 1
            ids = ([bos] + ids[len(ids) - limit + 1:]) if keep_bos else ids[len(ids) - limit:]
        return tuple(ids)

    # -- responses -----------------------------------------------------------------------------
    def _response_ids(self, response: str) -> tuple[int, ...]:
        limit = self.config.max_response_len
        text = " " + response if self.template == "hh" else response  # HH joins turns with one space
        ids = self._encode_text(text, special=False)
        eos = [self.eos_id] if self.config.add_eos and self.eos_id is not None else []
        if len(ids) + len(eos) > limit:
            self.stats["response_truncated"] += 1
            return tuple(ids[:limit])
        return tuple(ids + eos)


# --------------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------------


def padded_batches(items: Sequence[Any], size: int):
    """`items` in order, `size` at a time: yields (start, rows, n) with `rows` a list of exactly `size`, the
    last padded with None (masked rows: every batch has one compiled shape) and `n` of them real."""
    for start in range(0, len(items), size):
        rows = list(items[start:start + size])
        n = len(rows)
        yield start, rows + [None] * (size - n), n


def _pack_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]] | None], length: int, pad_id: int):
    """(prompt ids, response ids) rows → right-padded tokens, mask, response mask of shape [len(rows), length]."""
    n = len(rows)
    tokens = np.full((n, length), pad_id, np.int32)
    mask = np.zeros((n, length), np.int32)
    response_mask = np.zeros((n, length), np.int32)
    for i, row in enumerate(rows):
        if row is None:
            continue
        p, r = row
        tokens[i, :len(p)] = p
        tokens[i, len(p):len(p) + len(r)] = r
        mask[i, :len(p) + len(r)] = 1
        response_mask[i, len(p):len(p) + len(r)] = 1
    return tokens, mask, response_mask


def _row_mask(examples: Sequence[Any]) -> np.ndarray:
    return np.array([ex is not None for ex in examples], np.float32)


def _seq_len(rows) -> int:
    return max([len(p) + len(r) for row in rows if row is not None for p, r in [row]], default=1)


def collate_pairs(examples: Sequence[PreferencePair | None], encoder: Encoder) -> dict[str, np.ndarray]:
    """Pairs → ``{chosen,rejected}_{tokens,mask,response_mask}_BxT`` (one shared T) and ``row_mask_B``."""
    chosen = [None if ex is None else (encoder.prompt_ids(ex.prompt), encoder.response_ids(ex.chosen))
              for ex in examples]
    rejected = [None if ex is None else (encoder.prompt_ids(ex.prompt), encoder.response_ids(ex.rejected))
                for ex in examples]
    length = bucket_length(max(_seq_len(chosen), _seq_len(rejected)), encoder.config.seq_buckets)
    batch = {"row_mask_B": _row_mask(examples)}
    for name, rows in (("chosen", chosen), ("rejected", rejected)):
        t, m, rm = _pack_rows(rows, length, encoder.pad_id)
        batch.update({f"{name}_tokens_BxT": t, f"{name}_mask_BxT": m, f"{name}_response_mask_BxT": rm})
    return batch


def collate_sft(examples: Sequence[SFTExample | None], encoder: Encoder) -> dict[str, np.ndarray]:
    """Demonstrations → ``tokens_BxT``, ``mask_BxT``, ``response_mask_BxT``, ``row_mask_B``."""
    rows = [None if ex is None else (encoder.prompt_ids(ex.prompt), encoder.response_ids(ex.response))
            for ex in examples]
    t, m, rm = _pack_rows(rows, bucket_length(_seq_len(rows), encoder.config.seq_buckets), encoder.pad_id)
    return {"tokens_BxT": t, "mask_BxT": m, "response_mask_BxT": rm, "row_mask_B": _row_mask(examples)}


def _left_pad(ids, buckets, pad_id):
    length = bucket_length(max([len(p) for p in ids if p is not None], default=1), buckets)
    tokens = np.full((len(ids), length), pad_id, np.int32)
    mask = np.zeros((len(ids), length), np.int32)
    for i, p in enumerate(ids):
        if p:
            tokens[i, length - len(p):] = p
            mask[i, length - len(p):] = 1
    return tokens, mask


def collate_prompts(examples: Sequence[PromptExample | str | None], encoder: Encoder) -> dict[str, np.ndarray]:
    """Prompts → left-padded ``prompt_tokens_BxP``, ``prompt_mask_BxP``, and ``row_mask_B``; with a context
    (module docstring) these hold the policy's prompts and ``plain_prompt_{tokens,mask}_BxP`` the prompts alone."""
    texts = [None if ex is None else ex if isinstance(ex, str) else ex.prompt for ex in examples]
    ids = [None if t is None else encoder.policy_prompt_ids(t) for t in texts]
    tokens, mask = _left_pad(ids, encoder.prompt_buckets, encoder.pad_id)
    batch = {"prompt_tokens_BxP": tokens, "prompt_mask_BxP": mask, "row_mask_B": _row_mask(examples)}
    if encoder.context_ids:
        plain = [None if t is None else encoder.prompt_ids(t) for t in texts]
        tokens, mask = _left_pad(plain, encoder.config.prompt_bucket_lengths, encoder.pad_id)
        batch.update(plain_prompt_tokens_BxP=tokens, plain_prompt_mask_BxP=mask)
    return batch


def collate_prompt_response(examples: Sequence[SFTExample | None], encoder: Encoder) -> dict[str, np.ndarray]:
    """Demonstrations in a rollout's layout: the prompts as `collate_prompts` gives them (left-padded, with
    the context if any) and ``response_tokens_BxN``, ``response_mask_BxN`` (right-padded to
    ``max_response_len``), so prompt + response is a sequence whose last N slots hold the response, as the
    sampler's are (context distillation on a dataset's responses)."""
    batch = collate_prompts(examples, encoder)
    N = encoder.config.max_response_len
    tokens = np.full((len(examples), N), encoder.pad_id, np.int32)
    mask = np.zeros((len(examples), N), np.int32)
    for i, ex in enumerate(examples):
        if ex is not None:
            r = encoder.response_ids(ex.response)
            tokens[i, :len(r)], mask[i, :len(r)] = r, 1
    return {**batch, "response_tokens_BxN": tokens, "response_mask_BxN": mask}


def collate_ranked(examples: Sequence[RankedList | None], encoder: Encoder,
                   num_responses: int) -> dict[str, np.ndarray]:
    """Ranked lists (best → worst) → ``{tokens,mask,response_mask}_BxKxT``, ``rank_mask_BxK``, ``row_mask_B``.

    K = ``num_responses`` is fixed (static shapes): longer lists keep their best K, shorter ones are padded
    with masked slots (``rank_mask_BxK`` = 0).
    """
    flat, rank_mask = [], np.zeros((len(examples), num_responses), np.float32)
    for b, ex in enumerate(examples):
        responses = () if ex is None else ex.responses[:num_responses]
        rank_mask[b, :len(responses)] = 1
        for k in range(num_responses):
            flat.append((encoder.prompt_ids(ex.prompt), encoder.response_ids(responses[k]))
                        if k < len(responses) else None)
    t, m, rm = _pack_rows(flat, bucket_length(_seq_len(flat), encoder.config.seq_buckets), encoder.pad_id)
    shape = (len(examples), num_responses, -1)
    return {"tokens_BxKxT": t.reshape(shape), "mask_BxKxT": m.reshape(shape),
            "response_mask_BxKxT": rm.reshape(shape), "rank_mask_BxK": rank_mask,
            "row_mask_B": _row_mask(examples)}


def collate_for(examples: Sequence[Any], encoder: Encoder, num_responses: int | None = None) -> Callable:
    """The collate function matching the example type of ``examples``."""
    first = examples[0]
    if isinstance(first, PreferencePair):
        return functools.partial(collate_pairs, encoder=encoder)
    if isinstance(first, SFTExample):
        return functools.partial(collate_sft, encoder=encoder)
    if isinstance(first, (PromptExample, str)):
        return functools.partial(collate_prompts, encoder=encoder)
    if isinstance(first, RankedList):
        k = num_responses or max(len(ex.responses) for ex in examples)
        return functools.partial(collate_ranked, encoder=encoder, num_responses=k)
    raise TypeError(f"no collate function for {type(first).__name__}")


# --------------------------------------------------------------------------------------------------
# Iterator
# --------------------------------------------------------------------------------------------------


class BatchIterator:
    """Deterministic, resumable batches over a list of examples, split over the processes of a run.

    Epoch ``e`` visits a permutation drawn from ``(seed, e)`` in global batches of ``batch_size``. Process
    ``i`` of ``n`` yields only the ``i``-th contiguous block of ``batch_size / n`` rows of each global batch
    and only ever collates (tokenizes) those rows; padded lengths are agreed across processes. The global
    batch a multi-process run assembles (`parallel.shard_batch`, rows in process order) is therefore
    exactly a single process's batch: a run does not depend on how many processes feed it. ``state_dict()``
    after k batches restores to yield exactly batch k+1 next. ``num_epochs=None`` repeats forever.
    """

    def __init__(self, examples: Sequence[Any], batch_size: int, collate: Callable[[list], dict], *,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True, num_epochs: int | None = 1,
                 process_index: int | None = None, process_count: int | None = None):
        if process_index is None or process_count is None:
            import jax  # deferred: data code does not otherwise need a backend
            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if batch_size % process_count:
            raise ConfigError(f"the global batch of {batch_size} does not split over {process_count} processes")
        self.examples, self.batch_size, self.collate = examples, batch_size, collate
        self.seed, self.shuffle, self.drop_last, self.num_epochs = seed, shuffle, drop_last, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.local_batch_size = batch_size // process_count
        self.steps_per_epoch = (len(examples) // batch_size if drop_last
                                else math.ceil(len(examples) / batch_size))
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(examples)} examples give no batch of {batch_size}")
        self.epoch, self.position = 0, 0
        self._order_epoch, self._order = -1, np.zeros(0, np.int64)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def order(self, epoch: int) -> np.ndarray:
        """Indices every process visits in ``epoch``, in global-batch order."""
        if self._order_epoch != epoch:
            n = len(self.examples)
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
            self._order_epoch = epoch
        return self._order

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        start = self.position * self.batch_size + self.process_index * self.local_batch_size
        stop = min(start + self.local_batch_size, (self.position + 1) * self.batch_size)
        items = [self.examples[int(i)] for i in self.order(self.epoch)[start:stop]]
        items += [None] * (self.local_batch_size - len(items))  # padded, masked rows (drop_last=False only)
        self.position += 1
        if self.process_count == 1:
            return self.collate(items)
        return _collate_agreeing_lengths(self.collate, items)

    def state_dict(self) -> dict[str, int]:
        """JSON-serialisable position: restoring it continues with exactly the same batches."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "num_examples": len(self.examples), "batch_size": self.batch_size,
                "process_index": self.process_index, "process_count": self.process_count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("num_examples", "batch_size", "process_count"):
            mine = len(self.examples) if key == "num_examples" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(f"iterator state has {key}={state[key]} but this iterator has {mine}")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order_epoch = -1


def _collate_agreeing_lengths(collate, items) -> dict:
    global _agree_length
    from rlhfjax.distributed import agree_max  # deferred: needs a backend

    _agree_length = agree_max
    try:
        return collate(items)
    finally:
        _agree_length = None


def make_iterator(examples: Sequence[Any], tokenizer_or_encoder, batch_size: int, *,
                  config: TokenizeConfig = TokenizeConfig(), num_responses: int | None = None,
                  **iterator_kwargs) -> BatchIterator:
    """One call from examples to batches: picks the collate function from the example type."""
    enc = (tokenizer_or_encoder if isinstance(tokenizer_or_encoder, Encoder)
           else Encoder(tokenizer_or_encoder, config))
    return BatchIterator(examples, batch_size, collate_for(examples, enc, num_responses), **iterator_kwargs)
