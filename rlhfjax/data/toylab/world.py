"""The toy lab's synthetic dialogue language: topics, requests, vocabulary.

A prompt is a one-turn HH transcript holding a *request* of at most eight words::

    \\n\\nHuman: explain about rivers briefly with delta without fish\\n\\nAssistant:
    \\n\\nHuman: tell how to poison rivers\\n\\nAssistant:                     (a harmful request)

grammar: ``<verb> about <topic> [briefly|fully] [with <word>] [without <word>]`` or
``<verb> how to <harm-action> <topic> [briefly|fully]``. A response is a sequence of at most 28 words from
the vocabulary (topic words, filler words, harm words, the refusal phrase, the surface word ``certainly``).
Each topic owns eight content words; :data:`OOD_TOPICS` never appear in generated SFT or comparison data
(held out for OOD-detection studies) but are in the vocabulary.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlhfjax.data.hh import ASSISTANT, HUMAN

TOPICS: dict[str, tuple[str, ...]] = {
    "rivers": ("water", "flow", "bank", "delta", "stream", "fish", "bridge", "current"),
    "mountains": ("peak", "snow", "climb", "ridge", "summit", "rock", "valley", "trail"),
    "cooking": ("recipe", "oven", "salt", "pan", "boil", "flavor", "spice", "dough"),
    "music": ("melody", "rhythm", "guitar", "chord", "song", "drum", "tempo", "choir"),
    "space": ("planet", "orbit", "star", "rocket", "moon", "comet", "galaxy", "telescope"),
    "gardens": ("soil", "seed", "flower", "weed", "compost", "bloom", "shovel", "hedge"),
    "trains": ("rail", "station", "ticket", "engine", "track", "carriage", "platform", "freight"),
    "weather": ("cloud", "storm", "wind", "forecast", "thunder", "humid", "breeze", "frost"),
    "chess": ("pawn", "knight", "bishop", "castle", "checkmate", "opening", "gambit", "rook"),
    "oceans": ("wave", "tide", "coral", "reef", "whale", "shore", "sailor", "kelp"),
    "birds": ("feather", "nest", "wing", "beak", "flock", "migrate", "egg", "sparrow"),
    "computers": ("keyboard", "memory", "screen", "program", "mouse", "file", "chip", "network"),
    "painting": ("brush", "canvas", "color", "easel", "portrait", "sketch", "palette", "gallery"),
    "sports": ("team", "score", "goal", "coach", "match", "ball", "referee", "stadium"),
    "bread": ("flour", "yeast", "crust", "loaf", "bake", "knead", "rye", "toast"),
    "forests": ("tree", "leaf", "moss", "pine", "oak", "fern", "deer", "canopy"),
}
OOD_TOPICS: dict[str, tuple[str, ...]] = {
    "medicine": ("doctor", "pill", "fever", "nurse", "clinic", "dose", "heal", "bandage"),
    "law": ("judge", "court", "lawyer", "verdict", "contract", "jury", "appeal", "statute"),
    "finance": ("money", "invest", "stock", "budget", "loan", "interest", "savings", "profit"),
    "insects": ("ant", "beetle", "bee", "hive", "larva", "swarm", "antenna", "wasp"),
}
ALL_TOPICS = {**TOPICS, **OOD_TOPICS}
WORD_TOPIC = {w: t for t, words in ALL_TOPICS.items() for w in words}

VERBS = ("tell", "explain", "describe", "list")
LENGTHS = {"briefly": (3, 8), None: (4, 14), "fully": (6, 22)}  # (topic words needed, word limit)
HARM_ACTIONS = ("steal", "poison", "hack", "burn", "wreck", "hurt")
HARM_WORDS = HARM_ACTIONS + ("weapon", "secretly", "damage", "trap")  # forbidden content
REFUSAL = ("sorry", "i", "cannot", "help", "with", "that")
SAFE_PIVOT = ("but", "here", "is", "something", "safe")
SURFACE_WORD = "certainly"  # annotators like it; gold barely cares (see gold.py)
FILLER = ("the", "a", "and", "of", "is", "it", "very", "also", "then", "so", "this", "to", "in",
          "for", "some", "more", "well", "you", "can", "your", "first", "next", "often", "usually")
GRAMMAR = ("about", "how", "with", "without", "briefly", "fully")
MAX_RESPONSE_WORDS = 28


def vocabulary() -> list[str]:
    """Every word of the language, sorted (the tokenizer's training corpus)."""
    words = {*WORD_TOPIC, *ALL_TOPICS, *VERBS, *HARM_WORDS, *REFUSAL, *SAFE_PIVOT, *FILLER, *GRAMMAR,
             SURFACE_WORD}
    return sorted(words)


@dataclasses.dataclass(frozen=True)
class Request:
    """A parsed request. ``harm`` is the harm action of a harmful request (else None)."""

    verb: str
    topic: str
    length: str | None = None  # "briefly" | "fully" | None
    include: str | None = None  # a topic word the response must contain
    avoid: str | None = None  # a topic word the response must not contain
    harm: str | None = None

    @property
    def needed(self) -> int:
        return LENGTHS[self.length][0]

    @property
    def word_limit(self) -> int:
        return LENGTHS[self.length][1]

    def text(self) -> str:
        words = [self.verb] + (["how", "to", self.harm] if self.harm else ["about"]) + [self.topic]
        words += [self.length] if self.length else []
        words += ["with", self.include] if self.include else []
        words += ["without", self.avoid] if self.avoid else []
        return " ".join(words)

    def prompt(self) -> str:
        return f"{HUMAN} {self.text()}{ASSISTANT}"


def last_human_text(prompt: str) -> str:
    """The request text of an HH prompt (its last Human turn)."""
    body = prompt.rsplit(HUMAN, 1)[-1]
    return body.split(ASSISTANT, 1)[0].strip()


def parse_request(prompt: str) -> Request | None:
    """HH prompt (or bare request text) → :class:`Request`; ``None`` if it is not a toy-lab request."""
    words = last_human_text(prompt).split()
    if len(words) < 3 or words[0] not in VERBS:
        return None
    if words[1:3] == ["how", "to"] and len(words) >= 5 and words[3] in HARM_ACTIONS:
        harm, topic, rest = words[3], words[4], words[5:]
    elif words[1] == "about":
        harm, topic, rest = None, words[2], words[3:]
    else:
        return None
    if topic not in ALL_TOPICS:
        return None
    fields = {"length": None, "include": None, "avoid": None}
    i = 0
    while i < len(rest):
        w = rest[i]
        if w in ("briefly", "fully"):
            fields["length"] = w
        elif w in ("with", "without") and i + 1 < len(rest):
            fields["include" if w == "with" else "avoid"] = rest[i + 1]
            i += 1
        i += 1
    return Request(words[0], topic, harm=harm, **fields)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def sample_request(rng: np.random.Generator, topics: dict[str, tuple[str, ...]] = TOPICS,
                   harmful_rate: float = 0.2) -> Request:
    """A random request on one of ``topics``; a fraction ``harmful_rate`` asks for harm."""
    topic = _pick(rng, sorted(topics))
    verb = _pick(rng, VERBS)
    length = _pick(rng, (None, None, "briefly", "fully"))
    if rng.random() < harmful_rate:
        return Request(verb, topic, length=length, harm=_pick(rng, HARM_ACTIONS))
    words = list(topics[topic])
    include = _pick(rng, words) if rng.random() < 0.4 else None
    avoid = None
    if rng.random() < 0.3:
        avoid = _pick(rng, [w for w in words if w != include])
    return Request(verb, topic, length=length, include=include, avoid=avoid)
