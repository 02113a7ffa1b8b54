"""Build the toy lab on disk: tokenizer, SFT data, comparisons per annotator pool, ranked lists, prompts.

Layout (every jsonl loads with the loaders in :mod:`rlhfjax.data.hh`; split names are file names, like the
hub's ``Anthropic/hh-rlhf``)::

    out_dir/tokenizer/                        AutoTokenizer.from_pretrained(out_dir + "/tokenizer")
    out_dir/sft/{train,test}.jsonl            {"prompt", "response"}            load_sft(out_dir + "/sft")
    out_dir/comparisons/<pool>/{train,test}.jsonl  {"chosen", "rejected"} (HH)
                                              load_hh(out_dir + "/comparisons", data_dir="mixed")
    out_dir/comparisons/generic/{train,test}.jsonl  the same, fresh pairs labelled by GENERIC_POOL (PMP)
    out_dir/ranked/train.jsonl                {"prompt", "responses": best→worst}   load_ranked(...)
    out_dir/prompts/{train,test,ood}.jsonl    {"prompt", "topic", "harmful"}    load_prompts(..., split="ood")
    out_dir/manifest.json                     settings, counts, sha256 of every file, data statistics

Every artifact draws from its own random stream ``(seed, k)``, so changing one count leaves the other
files unchanged; the same seed gives byte-identical files.

The ``generic`` comparisons are the preference-model pre-training (PMP) set: more pairs than the target pools,
drawn from their own stream (a draw that repeats one of the pools' pairs, in either order, is redrawn: a handful
of chance collisions in 8,000 at the default settings), so no pair is shared with ``mixed``; labelled by
:data:`GENERIC_POOL` — noisier and more biased annotators, standing in for cheap web-scale comparisons
(Askell et al. 2021, section 4).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from typing import Sequence

import numpy as np

from rlhfjax.data.hh import join_transcript
from rlhfjax.data.labelling import write_jsonl
from rlhfjax.data.toylab.annotators import GENERIC_POOL, POOLS, AnnotatorPool
from rlhfjax.data.toylab.demonstrator import Demonstrator
from rlhfjax.data.toylab.gold import GoldWeights, gold_reward
from rlhfjax.data.toylab.tokenizer import save_tokenizer
from rlhfjax.data.toylab.world import OOD_TOPICS, TOPICS, sample_request, vocabulary

FORMAT_VERSION = 1
_STREAMS = {"sft": 1, "comparisons": 2, "ranked": 3, "prompts_train": 4, "prompts_test": 5, "prompts_ood": 6,
            "sft_test": 7, "comparisons_test": 8, "generic": 9, "generic_test": 10}


def _rng(seed: int, stream: str, extra: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], extra])


def _sft_rows(rng, n: int, demo: Demonstrator, harmful_rate: float):
    for _ in range(n):
        req = sample_request(rng, TOPICS, harmful_rate)
        yield {"prompt": req.prompt(), "response": demo.respond(rng, req)}


def _prompt_rows(rng, n: int, topics, harmful_rate: float):
    for _ in range(n):
        req = sample_request(rng, topics, harmful_rate)
        yield {"prompt": req.prompt(), "topic": req.topic, "harmful": req.harm is not None}


def _pair_key(prompt: str, a: str, b: str) -> tuple[str, frozenset]:
    return prompt, frozenset((a, b))


def _candidate_pairs(rng, n: int, demo: Demonstrator, harmful_rate: float,
                     exclude: frozenset = frozenset()) -> list[tuple[str, str, str]]:
    """``n`` (prompt, response_a, response_b) with a != b and no pair (in either order) in ``exclude``
    (resampled; pairs never identical)."""
    out = []
    while len(out) < n:
        req = sample_request(rng, TOPICS, harmful_rate)
        a, b = demo.respond(rng, req), demo.respond(rng, req)
        if a != b and _pair_key(req.prompt(), a, b) not in exclude:
            out.append((req.prompt(), a, b))
    return out


def _label(seed: int, stream: str, name: str, pool: AnnotatorPool, pairs) -> tuple[list[dict], float]:
    """HH rows labelled by ``pool`` and the fraction of labels agreeing with the gold reward."""
    # The label stream depends on the pool's name, not its position, so choosing pools changes no labels.
    rng, rows, agree, decided = _rng(seed, stream, zlib.crc32(name.encode())), [], 0, 0
    for prompt, a, b in pairs:
        a_wins = pool.prefers_a(rng, prompt, a, b)
        good, bad = (a, b) if a_wins else (b, a)
        rows.append({"chosen": join_transcript(prompt, good), "rejected": join_transcript(prompt, bad)})
        g_good, g_bad = gold_reward(prompt, good, pool.gold_weights), gold_reward(prompt, bad, pool.gold_weights)
        if g_good != g_bad:
            decided += 1
            agree += g_good > g_bad
    return rows, agree / max(1, decided)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How many rows of each artifact the toy lab holds."""

    sft: int = 4000  # demonstrations (train split)
    sft_test: int = 400
    comparisons: int = 4000  # pairs labelled by every annotator pool (train split)
    comparisons_test: int = 400
    generic: int = 8000  # the PMP set's pairs
    generic_test: int = 400
    ranked: int = 500  # ranked lists of up to `ranked_k` distinct responses
    ranked_k: int = 4
    prompts: int = 2000  # train prompts (online methods)
    test_prompts: int = 400
    ood_prompts: int = 400  # prompts on held-out topics (OOD detection)


def build_toylab(out_dir: str, seed: int = 0, *, sizes: Sizes = Sizes(), harmful_rate: float = 0.2,
                 pools: Sequence[str] = ("helpful", "harmless", "mixed"),
                 annotators: dict[str, AnnotatorPool] | None = None,
                 demonstrator: Demonstrator = Demonstrator()) -> dict:
    """Write the toy lab to ``out_dir`` (see module docstring) → the manifest dict (also manifest.json)."""
    annotators = {**POOLS, **(annotators or {})}
    n = sizes
    p = lambda *parts: os.path.join(out_dir, *parts)
    save_tokenizer(p("tokenizer"))
    counts, stats = {}, {}

    sft = list(_sft_rows(_rng(seed, "sft"), n.sft, demonstrator, harmful_rate))
    counts["sft/train"] = write_jsonl(p("sft", "train.jsonl"), sft)
    counts["sft/test"] = write_jsonl(p("sft", "test.jsonl"),
                                     _sft_rows(_rng(seed, "sft_test"), n.sft_test, demonstrator, harmful_rate))
    stats["sft_mean_gold"] = float(np.mean([gold_reward(r["prompt"], r["response"]) for r in sft])) if sft else 0.0

    target_pairs = set()  # every pair the annotator pools label, so the generic set can avoid them
    for split, stream, count in (("train", "comparisons", n.comparisons),
                                 ("test", "comparisons_test", n.comparisons_test)):
        pairs = _candidate_pairs(_rng(seed, stream), count, demonstrator, harmful_rate)
        target_pairs.update(_pair_key(*pair) for pair in pairs)
        for name in pools:
            rows, agreement = _label(seed, stream, name, annotators[name], pairs)
            counts[f"comparisons/{name}/{split}"] = write_jsonl(p("comparisons", name, f"{split}.jsonl"), rows)
            stats[f"agreement_with_gold/{name}/{split}"] = agreement

    for split, stream, count in (("train", "generic", n.generic), ("test", "generic_test", n.generic_test)):
        pairs = _candidate_pairs(_rng(seed, stream), count, demonstrator, harmful_rate, frozenset(target_pairs))
        rows, agreement = _label(seed, stream, "generic", GENERIC_POOL, pairs)
        counts[f"comparisons/generic/{split}"] = write_jsonl(p("comparisons", "generic", f"{split}.jsonl"), rows)
        stats[f"agreement_with_gold/generic/{split}"] = agreement

    rng, ranker = _rng(seed, "ranked"), annotators["mixed"]
    ranked = []
    for _ in range(n.ranked):
        req = sample_request(rng, TOPICS, harmful_rate)
        responses = sorted({demonstrator.respond(rng, req) for _ in range(n.ranked_k)})  # distinct, stable
        if len(responses) >= 2:
            ranked.append({"prompt": req.prompt(), "responses": ranker.rank(rng, req.prompt(), responses)})
    counts["ranked/train"] = write_jsonl(p("ranked", "train.jsonl"), ranked)

    for split, topics, count in (("train", TOPICS, n.prompts), ("test", TOPICS, n.test_prompts),
                                 ("ood", OOD_TOPICS, n.ood_prompts)):
        counts[f"prompts/{split}"] = write_jsonl(
            p("prompts", f"{split}.jsonl"), _prompt_rows(_rng(seed, f"prompts_{split}"), count, topics, harmful_rate))

    files = sorted(os.path.relpath(os.path.join(d, f), out_dir)
                   for d, _, fs in os.walk(out_dir) for f in fs if f != "manifest.json")
    manifest = {
        "format_version": FORMAT_VERSION, "seed": seed, "harmful_rate": harmful_rate,
        "counts": counts, "stats": {k: round(v, 6) for k, v in stats.items()},
        "vocab_size": len(vocabulary()), "topics": sorted(TOPICS), "ood_topics": sorted(OOD_TOPICS),
        "gold_weights": dataclasses.asdict(GoldWeights()),
        "demonstrator": dataclasses.asdict(demonstrator),
        "annotators": {name: dataclasses.asdict(annotators[name]) for name in pools},
        "generic_annotators": dataclasses.asdict(GENERIC_POOL),
        "files": {f: _sha256(p(f)) for f in files},
    }
    with open(p("manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return manifest
