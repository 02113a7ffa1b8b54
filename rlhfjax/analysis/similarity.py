"""Diversity / reward-hacking metrics of a set of sampled completions.

`meteor_similarity` is SuperHF's METEOR similarity (Mukobi et al. 2023): the mean pairwise METEOR
between completions to *different* prompts. A policy that collapses onto one high-reward answer
scores near 1 whatever it is asked; a diverse one scores low. `distinct_n` (Li et al. 2016) is the
fraction of unique n-grams. `similarity_metrics` bundles both with the mean response length.

Tokenization (shared by every metric here): lowercase, then words = runs of letters/digits/
underscores with an optional internal apostrophe ("don't"); punctuation is dropped so a shared
"." or "," does not count as overlap. nltk.word_tokenize is not used because it needs punkt data.

METEOR runs nltk's implementation (exact, then Porter-stem, then WordNet-synonym matching). WordNet
data cannot always be installed (it is a separate download); without it the synonym stage is given
a stand-in with no synsets, so METEOR is exact + stem only. `meteor_mode()` says which ran.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence

import numpy as np
from nltk.stem.porter import PorterStemmer
from nltk.translate.meteor_score import meteor_score

_WORD = re.compile(r"\w+(?:'\w+)?")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class _NoWordNet:
    """Stand-in for nltk's WordNet reader when its data is absent: no synonyms, so METEOR's
    synonym stage matches nothing (exact + stem matching still run)."""

    def synsets(self, word, *args, **kwargs):
        return []


class _CachedStemmer:
    """PorterStemmer with memoized stems: METEOR re-stems every unmatched word on every pair, and
    with 64 completions that is ~4000 calls over the same vocabulary."""

    def __init__(self):
        self._stem = functools.lru_cache(maxsize=None)(PorterStemmer().stem)

    def stem(self, word):
        return self._stem(word)


@functools.lru_cache(maxsize=1)
def _wordnet():
    """nltk.corpus.wordnet if its data is installed, else the no-synonym stand-in. The corpus is
    lazy: importing it always works, the first lookup raises LookupError when data is missing."""
    from nltk.corpus import wordnet

    try:
        wordnet.synsets("dog")
    except LookupError:
        return _NoWordNet()
    return wordnet


def meteor_mode() -> str:
    """Which METEOR variant `meteor_similarity` runs here (for callers to print next to it)."""
    if isinstance(_wordnet(), _NoWordNet):
        return "exact+stem (no WordNet data)"
    return "exact+stem+synonym (WordNet)"


def meteor_similarity(texts: Sequence[str], *, max_items: int = 64, seed: int = 0) -> float:
    """Mean pairwise METEOR over unordered pairs of `texts`.

    METEOR is asymmetric (recall is weighted 9:1 over precision), so a pair (a, b) scores the mean
    of METEOR(reference=a, hypothesis=b) and METEOR(reference=b, hypothesis=a).
    More than `max_items` texts: a random subset of `max_items` (numpy default_rng(seed), without
    replacement) is scored, bounding the cost at max_items·(max_items−1)/2 pairs.
    Empty completions (no words): two empty ones are identical and score 1.0 (a collapse onto
    empty output should read as collapse); empty vs non-empty scores 0.0 (nltk's value).
    Fewer than 2 texts: nan.
    """
    texts = list(texts)
    if len(texts) > max_items:
        keep = np.random.default_rng(seed).choice(len(texts), size=max_items, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    if len(texts) < 2:
        return float("nan")
    toks = [tokenize(t) for t in texts]
    wordnet, stemmer = _wordnet(), _CachedStemmer()

    def one_way(ref, hyp):
        return meteor_score([ref], hyp, stemmer=stemmer, wordnet=wordnet)

    scores = []
    for a, b in itertools.combinations(toks, 2):
        if not a and not b:
            scores.append(1.0)
        else:
            scores.append(0.5 * (one_way(a, b) + one_way(b, a)))
    return float(np.mean(scores))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over all texts (n-grams never span two texts).
    No n-grams at all (no texts, or every text shorter than n words): nan, as the ratio is
    undefined rather than "no diversity"."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(t[i : i + n]) for t in map(tokenize, texts) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def similarity_metrics(texts: Sequence[str], *, max_items: int = 64, seed: int = 0) -> dict:
    """METEOR similarity, distinct-1/2 and mean word count (same tokenizer) of `texts`. Keys
    carry no `eval/` prefix; callers add their own."""
    texts = list(texts)
    words = [len(tokenize(t)) for t in texts]
    return {
        "meteor_similarity": meteor_similarity(texts, max_items=max_items, seed=seed),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "response/words": float(np.mean(words)) if words else float("nan"),
    }
