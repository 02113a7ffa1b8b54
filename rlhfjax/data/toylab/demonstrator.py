"""A demonstrator of mixed quality: writes the toy lab's SFT data and the candidates annotators compare.

Each response is drawn from one of three modes (probabilities ``mix``):
  * good: covers the request within its length limit, obeys ``with``/``without``, refuses harmful requests
    (often pivoting to safe topic words), usually opens with ``certainly``;
  * mediocre: partial coverage, obeys constraints half the time, complies with half the harmful requests;
  * bad: off-topic words, repeats, ignores lengths and constraints, usually complies with harm, sometimes
    refuses benign requests. Rarely polite — so ``certainly`` correlates with quality without causing it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlhfjax.data.toylab.world import (FILLER, HARM_WORDS, MAX_RESPONSE_WORDS, REFUSAL, SAFE_PIVOT,
                                       SURFACE_WORD, TOPICS, Request)

MODES = ("good", "mediocre", "bad")


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _sample(rng: np.random.Generator, items, k: int) -> list[str]:
    k = max(0, min(k, len(items)))
    return [items[i] for i in rng.permutation(len(items))[:k]]


def _interleave(rng: np.random.Generator, content: list[str], n_filler: int) -> list[str]:
    """Insert ``n_filler`` filler words at random positions of ``content``."""
    words = list(content)
    for _ in range(max(0, n_filler)):
        words.insert(int(rng.integers(len(words) + 1)), _pick(rng, FILLER))
    return words


def _answer(rng, req: Request, n_topic: int, n_filler: int, obey: bool, off_topic: int = 0,
            repeats: int = 0) -> list[str]:
    """Words about the requested topic (+ constraint handling, noise) in random order."""
    pool = [w for w in TOPICS.get(req.topic, ()) if not (obey and w == req.avoid)]
    words = _sample(rng, pool, n_topic)
    if obey and req.include and req.include not in words:
        words = ([req.include] + words)[:max(1, n_topic)]
    others = [w for t in sorted(TOPICS) if t != req.topic for w in TOPICS[t]]
    words += _sample(rng, others, off_topic)
    words += [_pick(rng, words) for _ in range(repeats if words else 0)]
    return _interleave(rng, [words[i] for i in rng.permutation(len(words))], n_filler)


def _refusal(rng, req: Request, pivot: bool) -> list[str]:
    words = list(REFUSAL)
    if pivot:
        words += list(SAFE_PIVOT) + _sample(rng, list(TOPICS.get(req.topic, ())), 2)
    return words


def _comply(rng, req: Request, n_harm: int, n_filler: int) -> list[str]:
    """Harmful compliance: names the harm action, more harm words, and some topic words."""
    harm = [req.harm] + _sample(rng, [w for w in HARM_WORDS if w != req.harm], n_harm - 1)
    topic = _sample(rng, list(TOPICS.get(req.topic, ())), int(rng.integers(1, 4)))
    return ["first"] + _interleave(rng, harm + topic, n_filler)


@dataclasses.dataclass(frozen=True)
class Demonstrator:
    """Mixed-quality demonstrator; ``mix`` = probabilities of the good / mediocre / bad modes."""

    mix: tuple[float, float, float] = (0.5, 0.3, 0.2)

    def respond(self, rng: np.random.Generator, req: Request) -> str:
        """One response (text) to ``req``."""
        mode = MODES[int(rng.choice(3, p=np.asarray(self.mix) / sum(self.mix)))]
        return " ".join(respond_in_mode(rng, req, mode)[:MAX_RESPONSE_WORDS])


def respond_in_mode(rng: np.random.Generator, req: Request, mode: str) -> list[str]:
    """Words of one response in a given quality mode (see module docstring)."""
    need, limit = req.needed, req.word_limit
    if mode == "good":
        polite = rng.random() < 0.8
        if req.harm:
            words = (_refusal(rng, req, pivot=rng.random() < 0.5) if rng.random() < 0.7
                     else _answer(rng, req, need - 1, 2, obey=True))
        else:
            n_topic = min(need + int(rng.integers(2)), limit - 1)
            room = limit - n_topic - int(polite)
            words = _answer(rng, req, n_topic, int(rng.integers(1, max(2, room + 1))), obey=True)
    elif mode == "mediocre":
        polite = rng.random() < 0.3
        if req.harm:
            words = (_comply(rng, req, 1, int(rng.integers(1, 4))) if rng.random() < 0.5
                     else _refusal(rng, req, pivot=False))
        elif rng.random() < 0.05:
            words = _refusal(rng, req, pivot=False)
        else:
            words = _answer(rng, req, max(1, need - int(rng.integers(1, 3))), int(rng.integers(2, 9)),
                            obey=rng.random() < 0.5, off_topic=int(rng.random() < 0.3))
    elif mode == "bad":
        polite = rng.random() < 0.1
        if req.harm:
            words = (_comply(rng, req, int(rng.integers(2, 4)), int(rng.integers(1, 6))) if rng.random() < 0.8
                     else _refusal(rng, req, pivot=False))
        elif rng.random() < 0.2:
            words = _refusal(rng, req, pivot=False)
        else:
            words = _answer(rng, req, int(rng.integers(0, 3)), int(rng.integers(1, 16)),
                            obey=rng.random() < 0.2, off_topic=int(rng.integers(1, 4)),
                            repeats=int(rng.integers(0, 4)))
    else:
        raise ValueError(f"unknown mode {mode!r}")
    words = words or [_pick(rng, FILLER)]  # never an empty response
    return ([SURFACE_WORD] if polite else []) + words
