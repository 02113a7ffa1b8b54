"""Simulated annotators: Bradley–Terry choices on the gold reward, with noise and human-like biases.

An annotator's utility for a response is its pool's gold component (``helpful``, ``harmless`` or the full
``gold`` for the ``mixed`` pool) plus optional biases (``length_bias`` per word, ``surface_bias`` if the
response says ``certainly``). It prefers A over B with probability

    p = (1 − flip_noise) · sigmoid((u_A − u_B) / temperature) + flip_noise · (1 − sigmoid(…))

i.e. Bradley–Terry at ``temperature``, then the label is flipped with probability ``flip_noise`` (clerical
errors). With zero biases, agreement with gold is E[(1−ε)σ(|Δ|/T) + ε(1−σ(|Δ|/T))] over the compared pairs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rlhfjax.data.labelling import read_jsonl, write_jsonl
from rlhfjax.data.toylab.gold import GoldWeights, gold_components
from rlhfjax.data.toylab.world import SURFACE_WORD
from rlhfjax.errors import ConfigError

POOL_COMPONENT = {"helpful": "helpful", "harmless": "harmless", "mixed": "gold"}


@dataclasses.dataclass(frozen=True)
class AnnotatorPool:
    """A pool of simulated annotators; see the module docstring for the choice model."""

    pool: str = "mixed"  # "helpful" | "harmless" | "mixed"
    temperature: float = 0.25
    flip_noise: float = 0.0
    length_bias: float = 0.0  # utility per response word (annotators like longer answers)
    surface_bias: float = 0.0  # utility for saying SURFACE_WORD (annotators like politeness)
    gold_weights: GoldWeights = GoldWeights()

    def __post_init__(self):
        if self.pool not in POOL_COMPONENT:
            raise ConfigError(f"pool must be one of {sorted(POOL_COMPONENT)}, got {self.pool!r}")
        if self.temperature <= 0 or not 0 <= self.flip_noise <= 0.5:
            raise ConfigError("need temperature > 0 and 0 <= flip_noise <= 0.5")

    def utility(self, prompt: str, response: str) -> float:
        words = response.split()
        u = gold_components(prompt, response, self.gold_weights)[POOL_COMPONENT[self.pool]]
        return u + self.length_bias * len(words) + self.surface_bias * (SURFACE_WORD in words)

    def prob_prefers_a(self, prompt: str, a: str, b: str) -> float:
        """P(annotator prefers ``a`` over ``b``)."""
        z = (self.utility(prompt, a) - self.utility(prompt, b)) / self.temperature
        p = 0.5 * (1.0 + math.tanh(0.5 * z))  # sigmoid(z) without overflow
        return (1.0 - self.flip_noise) * p + self.flip_noise * (1.0 - p)

    def prefers_a(self, rng: np.random.Generator, prompt: str, a: str, b: str) -> bool:
        """One sampled label: True if ``a`` is preferred."""
        return bool(rng.random() < self.prob_prefers_a(prompt, a, b))

    def rank(self, rng: np.random.Generator, prompt: str, responses: list[str]) -> list[str]:
        """Best → worst by Plackett–Luce on utility/temperature (Gumbel trick; pairwise marginals are BT)."""
        keys = [self.utility(prompt, r) / self.temperature + rng.gumbel() for r in responses]
        return [responses[i] for i in np.argsort(keys, kind="stable")[::-1]]


POOLS: dict[str, AnnotatorPool] = {
    # Defaults for the toy lab's datasets: noisy, mildly biased, like crowd workers.
    "helpful": AnnotatorPool("helpful", temperature=0.25, flip_noise=0.1, length_bias=0.02, surface_bias=0.1),
    "harmless": AnnotatorPool("harmless", temperature=0.25, flip_noise=0.1, length_bias=0.02,
                              surface_bias=0.1),
    "mixed": AnnotatorPool("mixed", temperature=0.25, flip_noise=0.1, length_bias=0.02, surface_bias=0.1),
}

# Labels the toy lab's generic (PMP) comparisons: the mixed goal, but hastier (higher temperature), sloppier
# (more flips) and more swayed by length and politeness than the target pools.
GENERIC_POOL = AnnotatorPool("mixed", temperature=0.5, flip_noise=0.2, length_bias=0.05, surface_bias=0.3)


def label_tasks(tasks_path: str, labels_path: str, pool: AnnotatorPool, seed: int) -> int:
    """Simulated labelling of exported comparison tasks (see :mod:`rlhfjax.data.labelling`) → #labels."""
    rng = np.random.default_rng(seed)
    return write_jsonl(labels_path, (
        {"id": t["id"], "choice": "a" if pool.prefers_a(rng, t["prompt"], t["response_a"], t["response_b"])
         else "b"} for t in read_jsonl(tasks_path)))
