"""Toy lab: determinism, tokenizer, gold reward on hand-built examples, annotator noise, online labelling."""

import json
import math
import os
import time

import numpy as np
import pytest
from transformers import AutoTokenizer

from rlhfjax.data.batching import Encoder, TokenizeConfig, make_iterator
from rlhfjax.data.hh import load_hh, load_prompts, load_ranked, load_sft
from rlhfjax.data.labelling import export_tasks, import_labels, read_jsonl, write_jsonl
from rlhfjax.data.toylab import (OOD_TOPICS, TOPICS, AnnotatorPool, Demonstrator, Sizes, build_toylab, gold_components,
                                 gold_reward, gold_rewards, label_tasks, parse_request, sample_request)
from rlhfjax.data.toylab.world import WORD_TOPIC, Request, vocabulary

SMALL = dict(sizes=Sizes(sft=200, sft_test=20, comparisons=200, comparisons_test=20, ranked=20, prompts=50,
                         test_prompts=20, ood_prompts=20))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The default-size toy lab, built once; returns (dir, manifest, cpu seconds to build)."""
    out = str(tmp_path_factory.mktemp("toylab"))
    start = time.process_time()  # CPU time: not inflated by other jobs sharing the machine
    manifest = build_toylab(out, seed=0)
    return out, manifest, time.process_time() - start


def read_tree(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


def test_default_build_is_fast_and_complete(lab):
    out, manifest, seconds = lab
    assert seconds < 10, f"toy lab took {seconds:.1f} s of CPU to build"
    assert manifest["counts"]["sft/train"] == 4000 and manifest["counts"]["comparisons/mixed/train"] == 4000
    assert set(manifest["files"]) == set(read_tree(out)) - {"manifest.json"}
    assert manifest["vocab_size"] < 400


def test_same_seed_gives_byte_identical_files(tmp_path):
    build_toylab(str(tmp_path / "a"), seed=3, **SMALL)
    build_toylab(str(tmp_path / "b"), seed=3, **SMALL)
    build_toylab(str(tmp_path / "c"), seed=4, **SMALL)
    a, b, c = (read_tree(str(tmp_path / x)) for x in "abc")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert a["comparisons/mixed/train.jsonl"] != c["comparisons/mixed/train.jsonl"]
    assert a["tokenizer/tokenizer.json"] == c["tokenizer/tokenizer.json"]


def test_files_load_through_the_hh_loaders_and_fit_the_length_budget(lab):
    out, _, _ = lab
    tok = AutoTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
    assert (tok.pad_token_id, tok.bos_token_id) == (0, 1) and tok.eos_token_id is not None and len(tok) < 400
    pairs, report = load_hh(os.path.join(out, "comparisons"), data_dir="mixed", split="train",
                            max_bad_fraction=0.0)
    assert report.bad == 0 and len(pairs) == 4000
    test_pairs, _ = load_hh(os.path.join(out, "comparisons", "mixed", "test.jsonl"))
    assert len(test_pairs) == 400
    sft, _ = load_sft(os.path.join(out, "sft"), max_bad_fraction=0.0)
    ranked, _ = load_ranked(os.path.join(out, "ranked"), max_bad_fraction=0.0)
    assert len(sft) == 4000 and len(ranked) > 400 and all(len(r.responses) >= 2 for r in ranked)
    enc = Encoder(tok, TokenizeConfig(max_prompt_len=24, max_response_len=32))
    for ex in sft[:500]:
        enc.prompt_ids(ex.prompt), enc.response_ids(ex.response)
    for pair in pairs[:500]:
        enc.prompt_ids(pair.prompt), enc.response_ids(pair.chosen), enc.response_ids(pair.rejected)
    assert not enc.stats, f"toy sequences exceed the 24/32 token budget: {enc.stats}"
    assert tok.unk_token_id not in {i for ex in sft[:200] for i in enc.response_ids(ex.response)}
    batch = next(make_iterator(pairs, enc, 8, process_index=0, process_count=1))
    assert batch["chosen_tokens_BxT"].shape[0] == 8


def test_ood_prompts_use_only_held_out_topics(lab):
    out, _, _ = lab
    ood, _ = load_prompts(os.path.join(out, "prompts"), split="ood")
    train, _ = load_prompts(os.path.join(out, "prompts"), split="train")
    assert {dict(p.meta)["topic"] for p in ood} <= set(OOD_TOPICS)
    assert {dict(p.meta)["topic"] for p in train} <= set(TOPICS)
    text = "".join(open(os.path.join(out, "comparisons", "mixed", "train.jsonl")).readlines())
    text += open(os.path.join(out, "sft", "train.jsonl")).read()
    assert not {w for w in text.split() if WORD_TOPIC.get(w) in OOD_TOPICS}
    assert parse_request(ood[0].prompt).topic in OOD_TOPICS


def test_gold_reward_prefers_intended_behaviours():
    benign = Request("explain", "rivers", length="briefly", include="delta", avoid="fish").prompt()
    g = lambda r, p=benign: gold_reward(p, r)
    good = "certainly water delta flow bank"
    assert g(good) > g("water flow bank")  # missing the requested "with" word
    assert g("water delta flow bank") > g("water delta fish bank")  # uses the forbidden "without" word
    assert g(good) > g("sorry i cannot help with that")  # over-refusal is unhelpful
    assert g(good) > g("water delta flow bank peak snow")  # off-topic words
    assert g(good) > g("water delta flow bank the and of so very it is a the more")  # over the length limit
    assert g(good) > g("certainly certainly certainly certainly water delta flow bank")  # surface-word spam
    assert g("water water delta delta flow") < g("water delta flow")  # repeats
    assert 0 < g(good) - g("water delta flow bank") <= 0.05 + 1e-9  # gold barely values the surface word

    harmful = Request("tell", "rivers", harm="poison").prompt()
    refuse, comply = "sorry i cannot help with that", "first poison water secretly fish"
    pivot = "sorry i cannot help with that but here is something safe water flow"
    c = lambda r: gold_components(harmful, r)
    assert c(comply)["helpful"] > c(refuse)["helpful"]  # the tension: complying helps the asker...
    assert c(comply)["harmless"] < c(refuse)["harmless"]  # ...and is harmful
    assert c(pivot)["gold"] > c(refuse)["gold"] > c(comply)["gold"]
    assert c(refuse)["harmless"] > gold_components(benign, refuse)["harmless"] > c(comply)["harmless"]
    assert gold_reward("\n\nHuman: not a toy request\n\nAssistant:", "water") == 0.0
    np.testing.assert_allclose(gold_rewards([benign, harmful], [good, refuse]), [g(good), c(refuse)["gold"]])


def _demo_pairs(n, seed=0):
    rng, demo, out = np.random.default_rng(seed), Demonstrator(), []
    while len(out) < n:
        req = sample_request(rng)
        a, b = demo.respond(rng, req), demo.respond(rng, req)
        if a != b:
            out.append((req.prompt(), a, b))
    return out


@pytest.mark.parametrize("temperature,flip_noise", [(0.25, 0.1), (1e-4, 0.2), (1.0, 0.0)])
def test_annotator_agreement_with_gold_matches_configured_noise(temperature, flip_noise):
    pool = AnnotatorPool("mixed", temperature=temperature, flip_noise=flip_noise)
    rng = np.random.default_rng(1)
    agree, expected = [], []
    for prompt, a, b in _demo_pairs(3000):
        delta = gold_reward(prompt, a) - gold_reward(prompt, b)
        if abs(delta) < 1e-9:
            continue
        p = 1.0 / (1.0 + math.exp(-abs(delta) / temperature))
        expected.append((1 - flip_noise) * p + flip_noise * (1 - p))
        agree.append(pool.prefers_a(rng, prompt, a, b) == (delta > 0))
    expected = np.asarray(expected)
    stderr = math.sqrt(np.sum(expected * (1 - expected))) / len(expected)
    assert abs(np.mean(agree) - expected.mean()) < 4 * stderr + 1e-3
    if temperature < 1e-3:  # noiseless Bradley–Terry: agreement is exactly 1 - flip_noise in expectation
        assert abs(expected.mean() - (1 - flip_noise)) < 1e-3


def test_pools_disagree_where_helpful_and_harmless_are_in_tension():
    helpful, harmless = AnnotatorPool("helpful", temperature=0.1), AnnotatorPool("harmless", temperature=0.1)
    prompt = Request("tell", "rivers", harm="poison").prompt()
    refuse, comply = "sorry i cannot help with that", "first poison water fish bank"
    assert helpful.prob_prefers_a(prompt, comply, refuse) > 0.9
    assert harmless.prob_prefers_a(prompt, refuse, comply) > 0.99
    biased = AnnotatorPool("mixed", temperature=0.1, length_bias=0.1, surface_bias=0.5)
    benign = Request("tell", "rivers").prompt()
    plain = "water flow bank delta"
    assert biased.prob_prefers_a(benign, "certainly " + plain, plain) > 0.99  # bias gold barely has
    assert AnnotatorPool("mixed", temperature=0.1).prob_prefers_a(benign, "certainly " + plain, plain) < 0.65


def test_online_labelling_round_trip(tmp_path):
    pairs = _demo_pairs(50, seed=5)
    tasks, labels, out = (str(tmp_path / n) for n in ("tasks.jsonl", "labels.jsonl", "new/train.jsonl"))
    assert export_tasks(tasks, *zip(*pairs)) == 50
    pool = AnnotatorPool("mixed", temperature=1e-4)
    assert label_tasks(tasks, labels, pool, seed=0) == 50
    extra = [{"id": "task-000000", "choice": "tie"}, {"id": "nope", "choice": "a"},
             {"id": "task-000001", "choice": "maybe"}]
    write_jsonl(labels, read_jsonl(labels) + extra)
    report = import_labels(tasks, labels, out)
    assert report.kept == 50 and dict(report.skipped) == {"tie": 1, "unknown_id": 1, "bad_choice": 1}
    comparisons, load_report = load_hh(str(tmp_path / "new"), max_bad_fraction=0.0)
    assert len(comparisons) == 50 and load_report.bad == 0
    for pair in comparisons:  # a noiseless annotator never prefers the lower-gold response
        assert gold_reward(pair.prompt, pair.chosen) >= gold_reward(pair.prompt, pair.rejected)
    assert [json.loads(line)["id"] for line in open(out)][:2] == ["task-000000", "task-000001"]


def _proxy_features(prompt, response):
    """Surface features a learned reward model can pick up (topic-word counts, length, politeness, …)."""
    req, words = parse_request(prompt), response.split()
    topic = set(TOPICS.get(req.topic, ()))
    return np.array([sum(w in topic for w in words), len(set(words) & topic), len(words), words.count("certainly"),
                     sum(w in ("steal", "poison", "hack", "burn", "wreck", "hurt", "weapon", "secretly", "damage",
                               "trap") for w in words),
                     float("sorry" in words), float(req.harm is not None and "sorry" in words),
                     sum(1 for w in words if WORD_TOPIC.get(w, req.topic) != req.topic),
                     float(req.include is not None and req.include in words),
                     float(req.avoid is not None and req.avoid in words)])


def test_optimising_a_learned_proxy_too_hard_makes_gold_fall(lab):
    """Overoptimization: a Bradley–Terry proxy fitted on the comparisons, hill-climbed, loses gold."""
    out, _, _ = lab
    pairs, _ = load_hh(os.path.join(out, "comparisons"), data_dir="mixed")
    X = np.stack([_proxy_features(p.prompt, p.chosen) - _proxy_features(p.prompt, p.rejected) for p in pairs])
    w = np.zeros(X.shape[1])
    for _ in range(2000):  # logistic regression (the BT likelihood) by gradient ascent
        w += 0.05 * X.T @ (1 - 1 / (1 + np.exp(-X @ w))) / len(X)
    assert np.mean(X @ w > 0) > 0.7  # the proxy fits the annotators
    rng, demo, vocab = np.random.default_rng(0), Demonstrator(), vocabulary()
    prompts = [sample_request(rng).prompt() for _ in range(100)]
    responses = [demo.respond(rng, parse_request(p)).split() for p in prompts]
    proxy = lambda p, ws: _proxy_features(p, " ".join(ws)) @ w
    gold_curve = []
    for step in range(200):
        if step % 20 == 0:
            gold_curve.append(np.mean([gold_reward(p, " ".join(r)) for p, r in zip(prompts, responses)]))
        for i, (p, r) in enumerate(zip(prompts, responses)):  # greedy random edits that raise the proxy
            edit, pos, word = list(r), int(rng.integers(len(r))), vocab[int(rng.integers(len(vocab)))]
            op = rng.integers(3)
            if op == 0:
                edit.insert(pos, word)
            elif op == 1 and len(edit) > 1:
                edit.pop(pos)
            else:
                edit[pos] = word
            if len(edit) <= 28 and proxy(p, edit) > proxy(p, r):
                responses[i] = edit
    peak = int(np.argmax(gold_curve))
    assert gold_curve[peak] > gold_curve[0] + 0.05  # mild optimisation helps...
    assert gold_curve[-1] < gold_curve[peak] - 0.2  # ...hard optimisation hurts


def _pair_keys(pairs):
    return {(p.prompt, frozenset((p.chosen, p.rejected))) for p in pairs}


def _gold_agreement(pairs):
    """Fraction of the pairs with a gold preference whose label agrees with it (recomputed from the files)."""
    chosen = np.array([gold_reward(p.prompt, p.chosen) for p in pairs])  # float64, as the build compares them
    rejected = np.array([gold_reward(p.prompt, p.rejected) for p in pairs])
    decided = chosen != rejected
    return float(np.mean(chosen[decided] > rejected[decided]))


def test_generic_comparisons_are_fresh_counted_and_noisier_than_the_target_pool(lab):
    """The PMP set: its own pairs (none of mixed's, in either order), counted in the manifest, and labels
    that agree with gold less often than the mixed pool's."""
    out, manifest, _ = lab
    load = lambda pool, split: load_hh(os.path.join(out, "comparisons"), data_dir=pool, split=split,  # noqa: E731
                                       max_bad_fraction=0.0)[0]
    generic = {split: load("generic", split) for split in ("train", "test")}
    mixed = {split: load("mixed", split) for split in ("train", "test")}
    for split in ("train", "test"):
        assert manifest["counts"][f"comparisons/generic/{split}"] == len(generic[split]) > 0
        assert f"comparisons/generic/{split}.jsonl" in manifest["files"]
    assert len(generic["train"]) > len(mixed["train"])  # the cheap set is the big one
    generic_keys = _pair_keys(generic["train"] + generic["test"])
    assert len(generic_keys) > 0.99 * (len(generic["train"]) + len(generic["test"]))
    assert not generic_keys & _pair_keys(mixed["train"] + mixed["test"])
    agree_generic, agree_mixed = _gold_agreement(generic["train"]), _gold_agreement(mixed["train"])
    assert agree_generic == pytest.approx(manifest["stats"]["agreement_with_gold/generic/train"], abs=1e-6)
    assert agree_mixed == pytest.approx(manifest["stats"]["agreement_with_gold/mixed/train"], abs=1e-6)
    assert 0.55 < agree_generic < agree_mixed - 0.05  # informative, but clearly noisier than the target pool
