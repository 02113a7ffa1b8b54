"""Example types shared by every data source (HH files, the toy lab, online labelling):
``PreferencePair``, ``RankedList``, ``SFTExample``, ``PromptExample`` and ``prompts_of``.

All text is kept in Anthropic-HH form: a prompt is a transcript that ends with ``"\\n\\nAssistant:"`` and a
response is the text the assistant says after it (no leading space). Rendering with a chat template and
tokenization happen later, in :mod:`rlhfjax.data.batching`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``chosen`` was preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str


@dataclasses.dataclass(frozen=True)
class RankedList:
    """More than two responses to one prompt, ordered best → worst (Askell et al. 2021 ranked PM)."""

    prompt: str
    responses: tuple[str, ...]

    def __post_init__(self):
        # Accept lists from JSON but store a tuple so the example stays hashable and immutable.
        object.__setattr__(self, "responses", tuple(self.responses))

    def pairs(self) -> list[PreferencePair]:
        """All implied pairwise comparisons (i better than j for i < j)."""
        r = self.responses
        return [PreferencePair(self.prompt, r[i], r[j]) for i in range(len(r)) for j in range(i + 1, len(r))]


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """A demonstration: train the policy to say ``response`` after ``prompt``."""

    prompt: str
    response: str


@dataclasses.dataclass(frozen=True)
class PromptExample:
    """A prompt alone (RL rollouts, best-of-n, evaluation). ``meta`` carries e.g. the toy-lab topic."""

    prompt: str
    meta: tuple[tuple[str, object], ...] = ()  # sorted (key, scalar) pairs; hashable


def prompts_of(examples: Sequence[PreferencePair | RankedList | SFTExample]) -> list[PromptExample]:
    """Unique prompts of any example list, in first-seen order (prompt-only datasets for RL)."""
    seen: dict[str, None] = {}
    for ex in examples:
        seen.setdefault(ex.prompt, None)
    return [PromptExample(p) for p in seen]


def preview(text: str, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters with a visible marker when longer."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…[cut]"


def prompt_preview(prompt: str, limit: int = 200) -> str:
    """The last Human turn of an HH transcript (what the response answers), for logs; see `preview`."""
    from rlhfjax.data.hh import ASSISTANT, HUMAN

    start = prompt.rfind(HUMAN)
    turn = prompt[start + len(HUMAN):] if start >= 0 else prompt
    end = turn.rfind(ASSISTANT)
    return preview(turn[:end] if end >= 0 else turn, limit)
