"""Tokenization, truncation, bucketing, collation and the resumable, sharded batch iterator."""

import json

import numpy as np
import pytest

from rlhfjax.data.batching import (BatchIterator, Encoder, TokenizeConfig, bucket_length, collate_pairs,
                                   collate_prompts, collate_ranked, collate_sft, default_buckets,
                                   make_iterator)
from rlhfjax.data.hh import ASSISTANT, HUMAN, truncate_prompt_text
from rlhfjax.data.examples import PreferencePair, PromptExample, RankedList, SFTExample
from rlhfjax.data.toylab.tokenizer import train_tokenizer
from rlhfjax.data.toylab.world import FILLER, TOPICS
from rlhfjax.errors import ConfigError

TOK = train_tokenizer()
ASSISTANT_ID = TOK.convert_tokens_to_ids(ASSISTANT)
HUMAN_ID = TOK.convert_tokens_to_ids(HUMAN)
WORDS = sorted(w for ws in TOPICS.values() for w in ws) + list(FILLER)


def multi_turn(n_turns, words_per_turn=3, start=0):
    turns = [f"{HUMAN} {' '.join(WORDS[start + i: start + i + words_per_turn])}{ASSISTANT} {WORDS[i]}"
             for i in range(n_turns - 1)]
    return "".join(turns) + f"{HUMAN} {' '.join(WORDS[start: start + words_per_turn])}{ASSISTANT}"


def random_pairs(n, seed=0, max_turns=3, max_words=5):
    rng = np.random.default_rng(seed)
    pick = lambda k: " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=k))
    return [PreferencePair(multi_turn(int(rng.integers(1, max_turns + 1)), int(rng.integers(1, max_words + 1)),
                                      int(rng.integers(50))),
                           pick(int(rng.integers(1, 12))), pick(int(rng.integers(1, 12)))) for _ in range(n)]


def test_left_truncation_drops_whole_turns_then_tokens_and_keeps_final_assistant_turn():
    enc = Encoder(TOK, TokenizeConfig(max_prompt_len=12, max_response_len=8))
    prompt = multi_turn(4)  # each turn: HUMAN 3 words ASSISTANT 1 word = 6 tokens
    ids = enc.prompt_ids(prompt)
    last_two_turns = prompt[prompt.rfind(HUMAN, 0, prompt.rfind(HUMAN)):]
    assert list(ids) == TOK(last_two_turns)["input_ids"]  # whole turns dropped, text intact
    assert ids[0] == TOK.bos_token_id and ids[1] == HUMAN_ID and ids[-1] == ASSISTANT_ID
    # Final user turn alone too long: hard left cut, BOS kept, still ends with the Assistant marker.
    long_turn = f"{HUMAN} {' '.join(WORDS[:30])}{ASSISTANT}"
    ids = enc.prompt_ids(long_turn)
    assert len(ids) == 12 and ids[0] == TOK.bos_token_id and ids[-1] == ASSISTANT_ID
    assert TOK.decode(ids[1:-1]) == " ".join(WORDS[20:30])
    assert enc.stats["prompt_truncated"] == 2
    # Character-level truncation at load time follows the same rule.
    cut = truncate_prompt_text(prompt, len(last_two_turns) + 3)
    assert cut == last_two_turns
    assert truncate_prompt_text(long_turn, 40).endswith(" ".join(WORDS[28:30]) + ASSISTANT)


def test_responses_truncated_on_the_right_without_eos():
    enc = Encoder(TOK, TokenizeConfig(max_prompt_len=8, max_response_len=5))
    assert enc.response_ids("water flow") == (*TOK(" water flow", add_special_tokens=False)["input_ids"],
                                              TOK.eos_token_id)
    long = enc.response_ids(" ".join(WORDS[:9]))
    assert long == tuple(TOK(" ".join(WORDS[:5]), add_special_tokens=False)["input_ids"])
    assert TOK.eos_token_id not in long and enc.stats["response_truncated"] == 1


def test_pair_batches_masks_and_only_configured_bucket_lengths():
    config = TokenizeConfig(max_prompt_len=16, max_response_len=8, buckets=(8, 16, 24))
    enc = Encoder(TOK, config)
    pairs = random_pairs(64, max_turns=2, max_words=3)
    lengths = set()
    for batch in make_iterator(pairs, enc, 2, seed=1, process_index=0, process_count=1):
        T = batch["chosen_tokens_BxT"].shape[1]
        lengths.add(T)
        for side in ("chosen", "rejected"):
            tokens, mask = batch[f"{side}_tokens_BxT"], batch[f"{side}_mask_BxT"]
            rmask = batch[f"{side}_response_mask_BxT"]
            assert tokens.shape == mask.shape == rmask.shape == (2, T) and tokens.dtype == np.int32
            assert np.all(tokens[mask == 0] == TOK.pad_token_id)
            assert np.all(rmask <= mask)
            assert np.all(np.diff(mask, axis=1) <= 0)  # right-padded: ones then zeros
        np.testing.assert_array_equal(batch["row_mask_B"], np.ones(2))
    assert lengths <= {8, 16, 24} and len(lengths) >= 2
    one = collate_pairs([pairs[0]], enc)
    p, c = enc.prompt_ids(pairs[0].prompt), enc.response_ids(pairs[0].chosen)
    assert one["chosen_mask_BxT"].sum() == len(p) + len(c)
    assert one["chosen_response_mask_BxT"].sum() == len(c)
    np.testing.assert_array_equal(one["chosen_tokens_BxT"][0, :len(p) + len(c)], p + c)
    assert bucket_length(9, (8, 16)) == 16 and default_buckets(96) == (24, 48, 96)
    with pytest.raises(ValueError):
        TokenizeConfig(max_prompt_len=16, max_response_len=8, buckets=(8, 16))


def test_sft_prompt_and_ranked_batches():
    enc = Encoder(TOK, TokenizeConfig(max_prompt_len=16, max_response_len=8, prompt_buckets=(8, 16)))
    sft = collate_sft([SFTExample(f"{HUMAN} tell about rivers{ASSISTANT}", "water flow"), None], enc)
    assert sft["tokens_BxT"].shape == (2, 16)  # 6 prompt + 3 response tokens -> bucket 16 of (8, 16, 24)
    assert sft["mask_BxT"].sum() == 9 and sft["response_mask_BxT"].sum() == 3  # 2 words + EOS
    np.testing.assert_array_equal(sft["row_mask_B"], [1, 0])
    assert sft["mask_BxT"][1].sum() == 0
    prompts = collate_prompts([PromptExample(multi_turn(1)), PromptExample(multi_turn(2))], enc)
    tokens, mask = prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"]
    assert tokens.shape == (2, 16)
    assert np.all(tokens[:, -1] == ASSISTANT_ID) and np.all(mask[:, -1] == 1)  # left-padded
    assert mask[0].sum() == 6 and np.all(tokens[0, :10] == TOK.pad_token_id)
    ranked = collate_ranked([RankedList(multi_turn(1), ("a b", "c")), RankedList(multi_turn(1), ("d", "e", "f"))],
                            enc, num_responses=3)
    assert ranked["tokens_BxKxT"].shape[:2] == (2, 3)
    np.testing.assert_array_equal(ranked["rank_mask_BxK"], [[1, 1, 0], [1, 1, 1]])
    assert ranked["mask_BxKxT"][0, 2].sum() == 0


def test_chat_template_is_used_when_the_tokenizer_defines_one():
    chat_tok = train_tokenizer()
    # Renders messages back into the HH layout, so both paths must give identical ids.
    chat_tok.chat_template = (
        "<bos>{% for m in messages %}{{ '\n\nHuman: ' if m['role'] == 'user' else '\n\nAssistant: ' }}"
        "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}")
    config = TokenizeConfig(max_prompt_len=12, max_response_len=8)
    chat, plain = Encoder(chat_tok, config), Encoder(chat_tok, TokenizeConfig(12, 8, template="hh"))
    assert chat.template == "chat" and plain.template == "hh" and Encoder(TOK, config).template == "hh"
    for n in (1, 2, 4):
        assert chat.prompt_ids(multi_turn(n)) == plain.prompt_ids(multi_turn(n))
    with pytest.raises(ValueError):
        Encoder(TOK, TokenizeConfig(template="chat"))


def test_iterator_state_restore_mid_epoch_gives_exactly_the_same_batches():
    enc = Encoder(TOK, TokenizeConfig(max_prompt_len=16, max_response_len=8))
    pairs = random_pairs(30)
    make = lambda: make_iterator(pairs, enc, 4, seed=7, num_epochs=3, process_index=0, process_count=1)
    it = make()
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.state_dict()))
    expected = [next(it) for _ in range(9)]  # crosses the epoch boundary (7 batches per epoch)
    resumed = make()
    resumed.load_state_dict(state)
    got = [next(resumed) for _ in range(9)]
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert sum(1 for _ in make()) == 21  # 3 epochs × 7 full batches (30 // 4)
    bad = dict(state, batch_size=5)
    with pytest.raises(ValueError):
        make().load_state_dict(bad)


def test_shuffle_is_deterministic_by_seed_and_epoch():
    ident = lambda items: items
    order = lambda seed, epoch: BatchIterator(list(range(40)), 8, ident, seed=seed, process_index=0,
                                              process_count=1).order(epoch)
    np.testing.assert_array_equal(order(0, 0), order(0, 0))
    assert not np.array_equal(order(0, 0), order(0, 1)) and not np.array_equal(order(0, 0), order(1, 0))
    assert sorted(order(3, 2)) == list(range(40))


def test_processes_collate_only_their_block_and_together_give_the_one_process_batches():
    def iterator(pi, count, touched=None, **kw):
        def collate(items):
            if touched is not None:
                touched.extend(i for i in items if i is not None)
            return {"x": np.array([-1 if i is None else i for i in items])}

        return BatchIterator(list(range(50)), 6, collate, seed=3, process_index=pi, process_count=count, **kw)

    one = [b["x"] for b in iterator(0, 1, num_epochs=2)]
    touched = {pi: [] for pi in range(3)}
    parts = [list(iterator(pi, 3, touched[pi], num_epochs=2)) for pi in range(3)]
    assert len(one) == 2 * (50 // 6) and all(len(p) == len(one) for p in parts)
    for k, batch in enumerate(one):  # process p's rows are the p-th block of the same global batch
        np.testing.assert_array_equal(np.concatenate([p[k]["x"] for p in parts]), batch)
        assert all(len(p[k]["x"]) == 2 for p in parts)
    per_epoch = [set(t[:len(t) // 2]) for t in touched.values()]
    assert not per_epoch[0] & per_epoch[1] and not per_epoch[1] & per_epoch[2] and not per_epoch[0] & per_epoch[2]
    # The last global batch, kept and padded: each process pads its own block.
    tail = [list(iterator(pi, 3, drop_last=False))[-1]["x"] for pi in range(3)]
    np.testing.assert_array_equal(np.concatenate(tail), list(iterator(0, 1, drop_last=False))[-1]["x"])
    with pytest.raises(ConfigError, match="does not split over 4 processes"):
        iterator(0, 4)


def test_processes_pad_their_rows_to_the_longest_bucket_of_any_process(monkeypatch):
    """Each process collates only its rows; the padded length is the bucket of the longest row on any process
    (here a stand-in for the other process's maximum), so the rows form one global array."""
    from rlhfjax import distributed

    enc = Encoder(TOK, TokenizeConfig(max_prompt_len=64, max_response_len=16))
    pairs = random_pairs(8)
    alone = next(make_iterator(pairs, enc, 4, shuffle=False, process_index=0, process_count=1))
    longest_elsewhere = alone["chosen_tokens_BxT"].shape[1] + 20
    monkeypatch.setattr(distributed, "agree_max", lambda n: max(n, longest_elsewhere))
    mine = next(make_iterator(pairs, enc, 8, shuffle=False, process_index=0, process_count=2))
    assert mine["chosen_tokens_BxT"].shape[1] == bucket_length(longest_elsewhere, enc.config.seq_buckets)
    assert mine["chosen_tokens_BxT"].shape[1] > alone["chosen_tokens_BxT"].shape[1]
    n = alone["chosen_mask_BxT"].sum(1)
    np.testing.assert_array_equal(mine["chosen_mask_BxT"].sum(1), n)  # the same tokens, more padding


def test_last_partial_batch_is_padded_and_masked_when_not_dropped():
    enc = Encoder(TOK, TokenizeConfig(max_prompt_len=16, max_response_len=8))
    pairs = random_pairs(10)
    kept = list(make_iterator(pairs, enc, 4, drop_last=False, process_index=0, process_count=1))
    assert len(kept) == 3
    last = kept[-1]
    np.testing.assert_array_equal(last["row_mask_B"], [1, 1, 0, 0])
    assert last["chosen_mask_BxT"][2:].sum() == 0 and last["chosen_tokens_BxT"].shape[0] == 4
    assert len(list(make_iterator(pairs, enc, 4, process_index=0, process_count=1))) == 2


def test_padded_batches_keep_order_pad_only_the_last_and_count_the_real_rows():
    from rlhfjax.data.batching import padded_batches

    got = list(padded_batches(list("abcdefg"), 3))
    assert got == [(0, ["a", "b", "c"], 3), (3, ["d", "e", "f"], 3), (6, ["g", None, None], 1)]
    assert list(padded_batches(range(4), 2)) == [(0, [0, 1], 2), (2, [2, 3], 2)]  # any sequence; exact fit: no pad
    assert list(padded_batches([], 5)) == []
