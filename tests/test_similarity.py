import itertools
import math

import numpy as np
import pytest
from nltk.translate.meteor_score import meteor_score

from rlhfjax.analysis import similarity


def _wordnet_installed() -> bool:
    from nltk.corpus import wordnet

    try:
        wordnet.synsets("dog")
    except LookupError:
        return False
    return True


class _NoSynonyms:  # the reference loop's own stand-in, independent of the module's
    def synsets(self, word, *args, **kwargs):
        return []


def _reference_wordnet():
    if _wordnet_installed():
        from nltk.corpus import wordnet

        return wordnet
    return _NoSynonyms()


def test_meteor_similarity_identical_disjoint_partial():
    same = ["the quick brown fox jumps over the lazy dog"] * 4
    disjoint = ["alpha beta gamma", "delta epsilon zeta", "red green blue", "one two three"]
    partial = [
        "the quick brown fox jumps over the lazy dog",
        "the quick red fox sleeps under a tall tree",
        "a lazy dog sleeps over the quick brown cat",
    ]
    s_same = similarity.meteor_similarity(same)
    s_disjoint = similarity.meteor_similarity(disjoint)
    s_partial = similarity.meteor_similarity(partial)
    assert s_same > 0.95
    assert s_disjoint < 0.05
    assert s_disjoint < s_partial < s_same
    assert 0.05 < s_partial < 0.95


def test_meteor_similarity_equals_double_loop_over_nltk():
    # Lowercase, punctuation-free texts so `str.split` is an independent tokenizer that agrees.
    # Different lengths and stem-only matches ("cats"/"cat", "running"/"runs") make METEOR
    # asymmetric, so averaging both directions is observable.
    texts = [
        "the cats were running home",
        "a cat runs home quickly after dark",
        "running home the cats were late",
        "nothing in common here",
    ]
    toks = [t.split() for t in texts]
    wn = _reference_wordnet()
    both, one_way = [], []
    for i, j in itertools.combinations(range(len(toks)), 2):
        ab = meteor_score([toks[i]], toks[j], wordnet=wn)  # a is the reference, b the hypothesis
        ba = meteor_score([toks[j]], toks[i], wordnet=wn)
        both.append(0.5 * (ab + ba))
        one_way.append(ab)
    expected = float(np.mean(both))
    assert abs(expected - float(np.mean(one_way))) > 1e-3  # the example does discriminate
    assert similarity.meteor_similarity(texts) == pytest.approx(expected, abs=1e-12)


def test_meteor_similarity_subsample_is_seeded_and_uses_max_items(monkeypatch):
    texts = [f"word{i} shared tail number {i % 3}" for i in range(30)]
    max_items = 8
    seen = []  # every (reference, hypothesis) token pair METEOR is asked to score
    real = similarity.meteor_score

    def recording(references, hypothesis, **kwargs):
        seen.append((tuple(references[0]), tuple(hypothesis)))
        return real(references, hypothesis, **kwargs)

    monkeypatch.setattr(similarity, "meteor_score", recording)

    def run(seed):
        seen.clear()
        value = similarity.meteor_similarity(texts, max_items=max_items, seed=seed)
        used = {ref for ref, _ in seen} | {hyp for _, hyp in seen}
        return value, used, len(seen)

    v0, used0, calls0 = run(0)
    v0_again, used0_again, _ = run(0)
    v1, used1, _ = run(1)
    assert len(used0) == max_items  # every text is unique, so this counts texts scored
    assert calls0 == max_items * (max_items - 1)  # all unordered pairs, both directions
    assert (v0, used0) == (v0_again, used0_again)
    assert used1 != used0  # another seed draws another subset
    # The subsampled value is the plain pairwise mean over the chosen texts.
    chosen = [t for t in texts if tuple(similarity.tokenize(t)) in used0]
    assert len(chosen) == max_items
    assert v0 == pytest.approx(similarity.meteor_similarity(chosen, max_items=max_items))


def test_meteor_similarity_edge_cases():
    assert math.isnan(similarity.meteor_similarity([]))
    assert math.isnan(similarity.meteor_similarity(["only one"]))
    assert similarity.meteor_similarity(["", "  "]) == 1.0  # two empty completions are identical
    assert similarity.meteor_similarity(["", "hello world"]) == 0.0


def test_distinct_n_hand_counted():
    texts = ["The cat sat.", "the cat ran", "A dog!"]
    # Tokens: [the cat sat] [the cat ran] [a dog] (lowercased, punctuation dropped).
    # Unigrams: 8 in all; unique {the, cat, sat, ran, a, dog} = 6 -> 6/8.
    assert similarity.distinct_n(texts, 1) == pytest.approx(6 / 8)
    # Bigrams (none across texts): (the cat) (cat sat) (the cat) (cat ran) (a dog) = 5;
    # unique 4 -> 4/5. Bigrams spanning texts would give 7 in all.
    assert similarity.distinct_n(texts, 2) == pytest.approx(4 / 5)
    # Trigrams: (the cat sat) (the cat ran) -> 2 unique of 2.
    assert similarity.distinct_n(texts, 3) == pytest.approx(2 / 2)
    # No text has 4 words: no 4-grams -> nan.
    assert math.isnan(similarity.distinct_n(texts, 4))


def test_similarity_metrics_keys_and_values():
    texts = ["The cat sat.", "the cat ran", "A dog!"]
    m = similarity.similarity_metrics(texts)
    assert set(m) == {"meteor_similarity", "distinct_1", "distinct_2", "response/words"}
    assert m["response/words"] == pytest.approx((3 + 3 + 2) / 3)  # word counts from above
    assert m["distinct_2"] == pytest.approx(4 / 5)
    assert m["meteor_similarity"] == pytest.approx(similarity.meteor_similarity(texts))


def test_meteor_mode_reports_missing_wordnet():
    if _wordnet_installed():
        pytest.skip("WordNet data is installed here, so the no-WordNet mode cannot be checked")
    assert similarity.meteor_mode() == "exact+stem (no WordNet data)"
    # And the synonym stage really is off: synonyms with no shared stem do not match.
    assert similarity.meteor_similarity(["car", "automobile"]) == 0.0
