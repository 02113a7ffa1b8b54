"""Anthropic HH-RLHF format: parse and load comparisons, demonstrations, prompts and ranked lists.

A transcript is ``"\\n\\nHuman: … \\n\\nAssistant: … \\n\\nHuman: … \\n\\nAssistant: <response>"``. Each row is
split at its *last* Assistant turn into a shared prompt (ending with ``"\\n\\nAssistant:"``) and a response. A pair
whose two transcripts split into different prompts (a response that itself contains ``"\\n\\nAssistant:"``) is
split at the last Assistant turn the two share instead (:func:`split_at_shared_turn`).

Sources (hub ids, local files, in-memory rows), the bad-row :class:`~rlhfjax.data.sources.LoadReport` and
process sharding are generic and live in :mod:`rlhfjax.data.sources`; this module holds the HH row parsers
(each skips a bad row, or truncates an over-long prompt, with the reason counted) and the ``load_*`` entry points.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import datasets

from rlhfjax.data.examples import PreferencePair, PromptExample, RankedList, SFTExample
from rlhfjax.data.sources import NOT_STRING, LoadReport, _load

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
DEFAULT_HUB_ID = "Anthropic/hh-rlhf"

# Skip reasons (the row is dropped and counts as bad); NOT_STRING comes from `sources`.
NO_ASSISTANT_TURN = "no_assistant_turn"
EMPTY_RESPONSE = "empty_response"
IDENTICAL_RESPONSES = "identical_responses"
PROMPT_MISMATCH = "prompt_mismatch"
PROMPT_TOO_LONG = "prompt_too_long"
TOO_FEW_RESPONSES = "too_few_responses"
# Fix reasons (the row is kept, modified; counted but not bad).
PROMPT_TRUNCATED = "prompt_truncated"
PROMPT_FROM_COMMON_PREFIX = "prompt_from_common_prefix"


# --------------------------------------------------------------------------------------------------
# Transcripts
# --------------------------------------------------------------------------------------------------


def split_transcript(text: str) -> tuple[str, str]:
    """Split a transcript at its last Assistant turn → ``(prompt, response)``.

    The prompt ends with ``"\\n\\nAssistant:"``; the response is the text after it with surrounding
    whitespace stripped (``join_transcript`` puts back exactly one space). Raises ``ValueError`` if the
    text has no Assistant turn.
    """
    i = text.rfind(ASSISTANT)
    if i < 0:
        raise ValueError("transcript has no '\\n\\nAssistant:' turn")
    cut = i + len(ASSISTANT)
    return text[:cut], text[cut:].strip()


def split_at_shared_turn(a: str, b: str) -> tuple[str, str, str] | None:
    """Split two transcripts at the last Assistant turn of their longest common prefix.

    → ``(prompt, response_a, response_b)`` (responses stripped), or ``None`` if the common prefix holds no
    complete Assistant turn. For HH pairs where one response contains e.g. ``"\\n\\nAssistant: Human: …"``,
    so that splitting each transcript at its own last turn gives two different prompts.
    """
    shared = len(os.path.commonprefix([a, b]))
    i = a.rfind(ASSISTANT, 0, shared)
    if i < 0:
        return None
    cut = i + len(ASSISTANT)
    return a[:cut], a[cut:].strip(), b[cut:].strip()


def join_transcript(prompt: str, response: str) -> str:
    """Inverse of :func:`split_transcript` (for well-formed, stripped responses)."""
    return f"{prompt} {response}"


def as_hh_prompt(text: str) -> str:
    """A plain request becomes a one-turn HH prompt; an HH prompt is returned unchanged."""
    if text.endswith(ASSISTANT):
        return text
    return f"{HUMAN} {text.strip()}{ASSISTANT}"


_TURN_RE = re.compile(r"\n\n(Human|Assistant):")


def parse_turns(prompt: str) -> list[tuple[str, str]]:
    """HH prompt → ``[(role, text), ...]`` with roles ``user``/``assistant`` (chat-template messages).

    The trailing empty Assistant turn (the generation slot) is dropped; a non-empty preamble before the
    first marker becomes a ``system`` turn.
    """
    parts = _TURN_RE.split(prompt)
    turns = [("system", parts[0].strip())] if parts[0].strip() else []
    for role, text in zip(parts[1::2], parts[2::2]):
        turns.append(("user" if role == "Human" else "assistant", text.strip()))
    if turns and turns[-1] == ("assistant", ""):
        turns.pop()
    return turns


def truncate_prompt_text(prompt: str, max_chars: int) -> str:
    """Shorten an HH prompt from the left to ``max_chars``, keeping the final Human and Assistant turns.

    Whole early turns are dropped first (the prompt still starts at a Human turn); only if the last Human
    turn alone is too long is its text cut from the left.
    """
    if len(prompt) <= max_chars:
        return prompt
    starts = [m.start() for m in re.finditer(re.escape(HUMAN), prompt)]
    for s in starts:  # earliest Human turn that fits keeps the most context
        if len(prompt) - s <= max_chars:
            return prompt[s:]
    last = starts[-1] if starts else 0
    body = prompt[last + len(HUMAN): len(prompt) - len(ASSISTANT)]
    budget = max(0, max_chars - len(HUMAN) - len(ASSISTANT))
    return HUMAN + (body[len(body) - budget:] if budget else "") + ASSISTANT


# --------------------------------------------------------------------------------------------------
# Row parsers: row → example, or None after recording why in the report
# --------------------------------------------------------------------------------------------------


def _check_prompt(prompt: str, row: Any, report: LoadReport, max_prompt_chars: int | None,
                  long_prompt: str) -> str | None:
    if max_prompt_chars is None or len(prompt) <= max_prompt_chars:
        return prompt
    if long_prompt == "skip":
        report.skip(PROMPT_TOO_LONG, row)
        return None
    report.fix(PROMPT_TRUNCATED, row)
    return truncate_prompt_text(prompt, max_prompt_chars)


def parse_pair(row: Mapping, report: LoadReport, *, chosen_key: str = "chosen",
               rejected_key: str = "rejected", max_prompt_chars: int | None = None,
               long_prompt: str = "truncate") -> PreferencePair | None:
    """HH row ``{chosen, rejected}`` → :class:`PreferencePair`, or ``None`` (reason recorded)."""
    chosen, rejected = row.get(chosen_key), row.get(rejected_key)
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        report.skip(NOT_STRING, row)
        return None
    if ASSISTANT not in chosen or ASSISTANT not in rejected:
        report.skip(NO_ASSISTANT_TURN, row)
        return None
    (prompt, good), (prompt_b, bad) = split_transcript(chosen), split_transcript(rejected)
    from_shared_turn = prompt != prompt_b
    if from_shared_turn:
        # Only a split leaving two real, different responses is trusted; anything else (e.g. two
        # unrelated conversations) stays a mismatch rather than becoming a degenerate pair.
        shared = split_at_shared_turn(chosen, rejected)
        if shared is None or not shared[1] or not shared[2] or shared[1] == shared[2]:
            report.skip(PROMPT_MISMATCH, row)
            return None
        prompt, good, bad = shared
    if not good or not bad:
        report.skip(EMPTY_RESPONSE, row)
        return None
    if good == bad:
        report.skip(IDENTICAL_RESPONSES, row)
        return None
    prompt = _check_prompt(prompt, row, report, max_prompt_chars, long_prompt)
    if prompt is None:
        return None
    if from_shared_turn:  # counted only once the row is kept, so no row is both fixed and skipped
        report.fix(PROMPT_FROM_COMMON_PREFIX, row)
    return PreferencePair(prompt, good, bad)


def _split_transcript_row(row: Mapping, transcript_key: str, report: LoadReport) -> tuple[str, str] | None:
    """(prompt, final response) of a transcript field, or None with the skip counted."""
    text = row.get(transcript_key)
    if not isinstance(text, str):
        report.skip(NOT_STRING, row)
        return None
    if ASSISTANT not in text:
        report.skip(NO_ASSISTANT_TURN, row)
        return None
    return split_transcript(text)


def parse_sft(row: Mapping, report: LoadReport, *, prompt_key: str = "prompt",
              response_key: str = "response", transcript_key: str = "chosen",
              max_prompt_chars: int | None = None, long_prompt: str = "truncate") -> SFTExample | None:
    """``{prompt, response}`` row, or a transcript row (``chosen`` by default) → :class:`SFTExample`."""
    if prompt_key in row or response_key in row:
        prompt, response = row.get(prompt_key), row.get(response_key)
        if not isinstance(prompt, str) or not isinstance(response, str):
            report.skip(NOT_STRING, row)
            return None
        prompt, response = as_hh_prompt(prompt), response.strip()
    else:
        split = _split_transcript_row(row, transcript_key, report)
        if split is None:
            return None
        prompt, response = split
    if not response:
        report.skip(EMPTY_RESPONSE, row)
        return None
    prompt = _check_prompt(prompt, row, report, max_prompt_chars, long_prompt)
    return None if prompt is None else SFTExample(prompt, response)


def parse_prompt(row: Mapping, report: LoadReport, *, prompt_key: str = "prompt",
                 transcript_key: str = "chosen", max_prompt_chars: int | None = None,
                 long_prompt: str = "truncate") -> PromptExample | None:
    """``{prompt, ...}`` row or a transcript row → :class:`PromptExample`; other scalar fields go to ``meta``."""
    if prompt_key in row:
        prompt = row.get(prompt_key)
        if not isinstance(prompt, str):
            report.skip(NOT_STRING, row)
            return None
        prompt = as_hh_prompt(prompt)
    else:
        split = _split_transcript_row(row, transcript_key, report)
        if split is None:
            return None
        prompt = split[0]
    prompt = _check_prompt(prompt, row, report, max_prompt_chars, long_prompt)
    if prompt is None:
        return None
    meta = tuple(sorted((k, v) for k, v in row.items()
                        if k != prompt_key and isinstance(v, (str, int, float, bool))))
    return PromptExample(prompt, meta)


def parse_ranked(row: Mapping, report: LoadReport, *, prompt_key: str = "prompt",
                 responses_key: str = "responses", transcripts_key: str = "transcripts",
                 max_prompt_chars: int | None = None, long_prompt: str = "truncate") -> RankedList | None:
    """``{prompt, responses: [best…worst]}`` or ``{transcripts: [best…worst]}`` → :class:`RankedList`."""
    if transcripts_key in row:
        texts = row.get(transcripts_key)
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            report.skip(NOT_STRING, row)
            return None
        if not all(ASSISTANT in t for t in texts):
            report.skip(NO_ASSISTANT_TURN, row)
            return None
        splits = [split_transcript(t) for t in texts]
        if len({p for p, _ in splits}) > 1:
            report.skip(PROMPT_MISMATCH, row)
            return None
        prompt = splits[0][0] if splits else ""
        responses = [r for _, r in splits]
    else:
        prompt, responses = row.get(prompt_key), row.get(responses_key)
        if (not isinstance(prompt, str) or not isinstance(responses, (list, tuple))
                or not all(isinstance(r, str) for r in responses)):
            report.skip(NOT_STRING, row)
            return None
        prompt, responses = as_hh_prompt(prompt), [r.strip() for r in responses]
    if len(responses) < 2:
        report.skip(TOO_FEW_RESPONSES, row)
        return None
    if not all(responses):
        report.skip(EMPTY_RESPONSE, row)
        return None
    if len(set(responses)) < len(responses):
        report.skip(IDENTICAL_RESPONSES, row)
        return None
    prompt = _check_prompt(prompt, row, report, max_prompt_chars, long_prompt)
    return None if prompt is None else RankedList(prompt, tuple(responses))


def load_hh(source: str | datasets.Dataset | list = DEFAULT_HUB_ID, *, data_dir: str | None = None,
            split: str = "train", max_bad_fraction: float = 0.05, limit: int | None = None,
            chosen_key: str = "chosen", rejected_key: str = "rejected",
            max_prompt_chars: int | None = None, long_prompt: str = "truncate",
            **load_kwargs) -> tuple[list[PreferencePair], LoadReport]:
    """Load HH comparisons → ``(pairs, report)``.

    ``source``: hub id (``Anthropic/hh-rlhf``; ``data_dir`` picks a subset such as ``harmless-base``),
    local file / directory / glob (json, jsonl, jsonl.gz, parquet, csv), or already-loaded rows.
    ``max_prompt_chars`` with ``long_prompt="truncate"|"skip"`` handles over-long prompts at load time
    (token-level truncation happens again in batching). ``process_shard=(index, count)`` keeps only that
    process's contiguous slice of the rows (see ``shard_rows``). Other keywords go to
    ``datasets.load_dataset``.
    """
    return _load(parse_pair, source, data_dir, split, max_bad_fraction, limit, load_kwargs,
                 dict(chosen_key=chosen_key, rejected_key=rejected_key,
                      max_prompt_chars=max_prompt_chars, long_prompt=long_prompt))


def load_sft(source, *, data_dir: str | None = None, split: str = "train",
             max_bad_fraction: float = 0.05, limit: int | None = None, max_prompt_chars: int | None = None,
             long_prompt: str = "truncate", **load_kwargs) -> tuple[list[SFTExample], LoadReport]:
    """Load demonstrations (``{prompt, response}`` rows or HH transcripts' ``chosen``)."""
    return _load(parse_sft, source, data_dir, split, max_bad_fraction, limit, load_kwargs,
                 dict(max_prompt_chars=max_prompt_chars, long_prompt=long_prompt))


def load_prompts(source, *, data_dir: str | None = None, split: str = "train",
                 max_bad_fraction: float = 0.05, limit: int | None = None, unique: bool = True,
                 max_prompt_chars: int | None = None, long_prompt: str = "truncate",
                 **load_kwargs) -> tuple[list[PromptExample], LoadReport]:
    """Load prompts for RL (``{prompt, ...}`` rows or the prompt part of HH transcripts)."""
    examples, report = _load(parse_prompt, source, data_dir, split, max_bad_fraction, limit, load_kwargs,
                             dict(max_prompt_chars=max_prompt_chars, long_prompt=long_prompt))
    if unique:  # HH has several comparisons per prompt; RL wants each prompt once
        seen: dict[str, PromptExample] = {}
        for ex in examples:
            seen.setdefault(ex.prompt, ex)
        examples = list(seen.values())
    return examples, report


def load_ranked(source, *, data_dir: str | None = None, split: str = "train",
                max_bad_fraction: float = 0.05, limit: int | None = None,
                max_prompt_chars: int | None = None, long_prompt: str = "truncate",
                **load_kwargs) -> tuple[list[RankedList], LoadReport]:
    """Load ranked lists (more than two responses per prompt, best → worst)."""
    return _load(parse_ranked, source, data_dir, split, max_bad_fraction, limit, load_kwargs,
                 dict(max_prompt_chars=max_prompt_chars, long_prompt=long_prompt))
