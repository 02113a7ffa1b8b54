"""HH-format loading: transcript splitting, bad rows by reason, local formats, hub pass-through, real data."""

import json
import os

import datasets
import numpy as np
import pytest

from rlhfjax.data import hh, sources
from rlhfjax.data.batching import Encoder, TokenizeConfig, collate_pairs
from rlhfjax.data.hh import ASSISTANT, HUMAN, load_hh, load_prompts, load_ranked, load_sft, split_transcript
from rlhfjax.data.examples import PreferencePair, RankedList
from rlhfjax.data.sources import BadDataError
from rlhfjax.data.toylab.tokenizer import train_tokenizer

REAL_HH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "hh-rlhf",
                       "harmless-base-test-first1500.jsonl.gz")
P2 = "\n\nHuman: tell about rivers\n\nAssistant: water flow\n\nHuman: explain more\n\nAssistant:"


def t(prompt, response):
    return f"{prompt} {response}"


# Every bad-row reason, with the exact count each should get.
GOOD = [
    {"chosen": t(P2, "bank delta stream"), "rejected": t(P2, "sorry i cannot")},
    {"chosen": t("\n\nHuman: tell about music\n\nAssistant:", "melody song"),
     "rejected": t("\n\nHuman: tell about music\n\nAssistant:", "peak snow")},
    {"chosen": t(P2, "fish bridge"), "rejected": t(P2, "the the the")},
]
BAD = [
    ({"chosen": "\n\nHuman: hello there", "rejected": "\n\nHuman: hello there"}, hh.NO_ASSISTANT_TURN),
    ({"chosen": t(P2, "water"), "rejected": "\n\nHuman: no reply here"}, hh.NO_ASSISTANT_TURN),
    ({"chosen": P2, "rejected": t(P2, "water")}, hh.EMPTY_RESPONSE),
    ({"chosen": t(P2, "water"), "rejected": P2 + "   \n "}, hh.EMPTY_RESPONSE),
    ({"chosen": None, "rejected": t(P2, "water")}, sources.NOT_STRING),
    ({"chosen": t(P2, "water"), "rejected": None}, sources.NOT_STRING),
    ({"chosen": t(P2, "same words"), "rejected": t(P2, "same words")}, hh.IDENTICAL_RESPONSES),
    ({"chosen": t(P2, "same words"), "rejected": t(P2, " same words ")}, hh.IDENTICAL_RESPONSES),
    ({"chosen": t("\n\nHuman: a\n\nAssistant:", "x"), "rejected": t("\n\nHuman: b\n\nAssistant:", "y")},
     hh.PROMPT_MISMATCH),
]
LONG_PROMPT = "".join(f"\n\nHuman: turn {i} words words\n\nAssistant: reply {i}" for i in range(6)) + \
    "\n\nHuman: final question\n\nAssistant:"
LONG = {"chosen": t(LONG_PROMPT, "good answer"), "rejected": t(LONG_PROMPT, "bad answer")}
ROWS = GOOD + [r for r, _ in BAD] + [LONG]
EXPECTED_SKIPS = {hh.NO_ASSISTANT_TURN: 2, hh.EMPTY_RESPONSE: 2, sources.NOT_STRING: 2,
                  hh.IDENTICAL_RESPONSES: 2, hh.PROMPT_MISMATCH: 1}


def write_formats(tmp_path, rows):
    """The same rows as .json (one JSON list), .jsonl and .parquet files."""
    paths = {"json": tmp_path / "rows.json", "jsonl": tmp_path / "rows.jsonl",
             "parquet": tmp_path / "rows.parquet"}
    paths["json"].write_text(json.dumps(rows))
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    datasets.Dataset.from_list(rows).to_parquet(str(paths["parquet"]))
    return {k: str(v) for k, v in paths.items()}


def test_split_transcript_multi_turn():
    prompt, response = split_transcript(P2 + "  bank delta \n")
    assert prompt == P2 and prompt.endswith(ASSISTANT)
    assert response == "bank delta"
    assert split_transcript(hh.join_transcript(prompt, response)) == (prompt, response)
    assert hh.parse_turns(P2) == [("user", "tell about rivers"), ("assistant", "water flow"),
                                  ("user", "explain more")]
    with pytest.raises(ValueError):
        split_transcript("\n\nHuman: only a question")


def test_bad_rows_counted_by_reason_exactly(tmp_path):
    pairs, report = load_hh(ROWS, max_bad_fraction=1.0, max_prompt_chars=100)
    assert report.rows == len(ROWS) and report.kept == len(GOOD) + 1 == len(pairs)
    assert dict(report.skipped) == EXPECTED_SKIPS
    assert dict(report.fixed) == {hh.PROMPT_TRUNCATED: 1}
    long_pair = pairs[-1]
    assert len(long_pair.prompt) <= 100 and long_pair.prompt.startswith(HUMAN)
    assert long_pair.prompt.endswith("\n\nHuman: final question\n\nAssistant:")
    for reason in EXPECTED_SKIPS:
        assert f"skipped {reason}: {EXPECTED_SKIPS[reason]}" in report.summary()
    # Over-long prompts can be skipped instead of truncated.
    _, report = load_hh(ROWS, max_bad_fraction=1.0, max_prompt_chars=100, long_prompt="skip")
    assert report.skipped[hh.PROMPT_TOO_LONG] == 1 and not report.fixed


def test_pairs_whose_prompts_differ_split_at_their_last_shared_assistant_turn():
    """HH responses sometimes contain '\\n\\nAssistant:' themselves; the shared turn is the real prompt."""
    q = "\n\nHuman: q\n\nAssistant:"
    fixed_rows = [  # (row, expected pair)
        ({"chosen": t(P2, "yes.  Human: why?\n\nAssistant:  because"), "rejected": t(P2, "no")},
         PreferencePair(P2, "yes.  Human: why?\n\nAssistant:  because", "no")),
        ({"chosen": t(P2, "a\n\nHuman: b\n\nAssistant: c"), "rejected": t(P2, "a")},
         PreferencePair(P2, "a\n\nHuman: b\n\nAssistant: c", "a")),
        # The common prefix ends inside a marker ("\n\nAssist"): only a complete turn is a split point.
        ({"chosen": q + " a\n\nAssistant: b", "rejected": q + " a\n\nAssist c"},
         PreferencePair(q, "a\n\nAssistant: b", "a\n\nAssist c")),
    ]
    still_bad = [
        # Nothing after the shared turn on one side.
        {"chosen": P2, "rejected": t(P2, "x\n\nHuman: more\n\nAssistant: y")},
        # The responses after the shared turn are the same text.
        {"chosen": t(P2, "x\n\nAssistant: y"), "rejected": t(P2, " x\n\nAssistant: y")},
        # No Assistant turn in common at all.
        {"chosen": t("\n\nHuman: a\n\nAssistant:", "x"), "rejected": t("\n\nHuman: b\n\nAssistant:", "y")},
    ]
    same_last_turn = {"chosen": t(P2, "x\n\nAssistant: y"), "rejected": t(P2, "x\n\nAssistant: z")}
    rows = [r for r, _ in fixed_rows] + still_bad + [same_last_turn]
    pairs, report = load_hh(rows, max_bad_fraction=1.0)
    assert pairs == [p for _, p in fixed_rows] + [PreferencePair(P2 + " x" + ASSISTANT, "y", "z")]
    assert dict(report.skipped) == {hh.PROMPT_MISMATCH: 3}
    assert dict(report.fixed) == {hh.PROMPT_FROM_COMMON_PREFIX: 3}
    assert "why?" in report.examples[hh.PROMPT_FROM_COMMON_PREFIX]
    # A row skipped for its prompt's length is not also counted as fixed.
    _, report = load_hh(rows[:1], max_prompt_chars=len(P2) - 1, long_prompt="skip", max_bad_fraction=1.0)
    assert dict(report.skipped) == {hh.PROMPT_TOO_LONG: 1} and not report.fixed


def test_non_mapping_and_non_string_rows_do_not_crash():
    rows = GOOD + [{"chosen": 3, "rejected": t(P2, "x")}, ["not", "a", "dict"], {}]
    pairs, report = load_hh(rows, max_bad_fraction=1.0)
    assert len(pairs) == 3 and report.skipped == {sources.NOT_STRING: 3}


def test_too_many_bad_rows_raise_with_one_example_per_reason():
    with pytest.raises(BadDataError) as err:
        load_hh(ROWS, max_bad_fraction=0.05)
    message = str(err.value)
    for reason in EXPECTED_SKIPS:
        assert f"e.g. {reason}:" in message
    assert "hello there" in message  # the no-assistant example is quoted
    load_hh(ROWS, max_bad_fraction=9 / len(ROWS))  # exactly at the limit is fine


def test_json_jsonl_parquet_give_identical_pairs_and_batches(tmp_path):
    paths = write_formats(tmp_path, ROWS)
    encoder = Encoder(train_tokenizer(), TokenizeConfig(max_prompt_len=16, max_response_len=8))
    results = {}
    for fmt, path in paths.items():
        pairs, report = load_hh(path, max_bad_fraction=1.0)
        results[fmt] = (pairs, report.to_dict(), collate_pairs(pairs, encoder))
    ref_pairs, ref_report, ref_batch = results["jsonl"]
    assert len(ref_pairs) == len(GOOD) + 1 and ref_report["skipped"] == EXPECTED_SKIPS
    for fmt, (pairs, report, batch) in results.items():
        assert pairs == ref_pairs, fmt
        assert {k: v for k, v in report.items() if k != "source"} == \
            {k: v for k, v in ref_report.items() if k != "source"}
        assert batch.keys() == ref_batch.keys()
        for key in batch:
            np.testing.assert_array_equal(batch[key], ref_batch[key], err_msg=f"{fmt} {key}")


def test_hub_id_passes_through_to_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list(GOOD)

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_load_dataset)
    pairs, report = load_hh("Anthropic/hh-rlhf", data_dir="harmless-base", split="test")
    assert calls == [("Anthropic/hh-rlhf", {"data_dir": "harmless-base", "split": "test"})]
    assert len(pairs) == 3 and "harmless-base:test" in report.source


def test_local_dir_with_hub_layout_selects_split_and_data_dir(tmp_path):
    for sub, rows_by_split in {"harmless-base": {"train": GOOD[:2], "test": GOOD[2:]},
                               "helpful-base": {"train": GOOD, "test": GOOD}}.items():
        (tmp_path / sub).mkdir()
        for split, rows in rows_by_split.items():
            (tmp_path / sub / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test, _ = load_hh(str(tmp_path), data_dir="harmless-base", split="test")
    train, _ = load_hh(str(tmp_path), data_dir="harmless-base")
    assert len(test) == 1 and len(train) == 2
    assert len(load_hh(str(tmp_path), data_dir="helpful-base", split="train[:2]")[0]) == 2
    everything, _ = load_hh(str(tmp_path / "*" / "train.jsonl"))
    assert len(everything) == 5
    with pytest.raises(FileNotFoundError):
        load_hh(str(tmp_path / "missing.jsonl"))


def test_sft_prompt_and_ranked_loaders():
    sft_rows = [{"prompt": "tell about rivers", "response": " water flow "},
                {"prompt": P2, "response": ""}, {"prompt": None, "response": "x"}]
    sft, report = load_sft(sft_rows, max_bad_fraction=1.0)
    assert [(e.prompt, e.response) for e in sft] == [(f"{HUMAN} tell about rivers{ASSISTANT}", "water flow")]
    assert report.skipped == {hh.EMPTY_RESPONSE: 1, sources.NOT_STRING: 1}
    sft_from_hh, _ = load_sft(GOOD)  # HH transcripts: demonstrations from the chosen side
    assert sft_from_hh[0].prompt == P2 and sft_from_hh[0].response == "bank delta stream"

    prompts, report = load_prompts(GOOD + [{"prompt": "x", "topic": "t", "harmful": True}])
    assert [p.prompt for p in prompts] == [P2, "\n\nHuman: tell about music\n\nAssistant:",
                                           f"{HUMAN} x{ASSISTANT}"]  # unique, first-seen order
    assert dict(prompts[-1].meta) == {"topic": "t", "harmful": True}

    ranked_rows = [{"prompt": P2, "responses": ["a b", "c", "d e f"]},
                   {"transcripts": [t(P2, "one"), t(P2, "two")]},
                   {"prompt": P2, "responses": ["only one"]},
                   {"prompt": P2, "responses": ["x", "x", "y"]},
                   {"transcripts": [t(P2, "one"), t("\n\nHuman: q\n\nAssistant:", "two")]}]
    ranked, report = load_ranked(ranked_rows, max_bad_fraction=1.0)
    assert ranked == [RankedList(P2, ("a b", "c", "d e f")), RankedList(P2, ("one", "two"))]
    assert report.skipped == {hh.TOO_FEW_RESPONSES: 1, hh.IDENTICAL_RESPONSES: 1, hh.PROMPT_MISMATCH: 1}
    assert ranked[0].pairs()[0] == PreferencePair(P2, "a b", "c") and len(ranked[0].pairs()) == 3


@pytest.mark.skipif(not os.path.exists(REAL_HH), reason=f"real HH-RLHF subset not present at {REAL_HH}")
def test_real_hh_rlhf_subset_offline():
    pairs, report = load_hh(REAL_HH)  # json builder + data_files, the hub's code path
    assert report.rows == 1500 and report.kept == 1496 == len(pairs)
    assert dict(report.skipped) == {hh.EMPTY_RESPONSE: 4}
    # One chosen response goes on with "  Human: …\n\nAssistant: …"; split where the two still agree.
    assert dict(report.fixed) == {hh.PROMPT_FROM_COMMON_PREFIX: 1}
    fixed = [p for p in pairs if p.rejected.startswith("A drag king is the opposite of a drag queen")]
    assert len(fixed) == 1 and fixed[0].prompt.endswith("\n\nHuman: Isn't that drag kings?" + ASSISTANT)
    assert fixed[0].chosen.startswith("No. Men who impersonate") and fixed[0].chosen.endswith("because")
    raw = datasets.load_dataset("json", data_files=REAL_HH, split="train")
    assert raw.num_rows == 1500
    first = split_transcript(raw[0]["chosen"])
    assert (pairs[0].prompt, pairs[0].chosen) == first
    assert all(p.prompt.endswith(ASSISTANT) and p.chosen and p.chosen != p.rejected for p in pairs)
    # Long multi-turn prompts keep their final Assistant turn after token truncation.
    tok = train_tokenizer()
    encoder = Encoder(tok, TokenizeConfig(max_prompt_len=12, max_response_len=8))
    assistant_id = tok.convert_tokens_to_ids(ASSISTANT)
    ids = [encoder.prompt_ids(p.prompt) for p in pairs[:200]]
    assert all(len(i) <= 12 and i[-1] == assistant_id for i in ids)
    assert encoder.stats["prompt_truncated"] > 0


def test_process_shards_partition_the_rows_before_parsing(tmp_path):
    import json as _json

    from rlhfjax.data.hh import load_hh as _load_hh

    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: good {i}",
             "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad {i}"} for i in range(10)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    everything, _ = _load_hh(str(path))
    parts = [_load_hh(str(path), process_shard=(i, 3))[0] for i in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [ex for part in parts for ex in part] == everything
    _, report = _load_hh(str(path), process_shard=(1, 3))
    assert report.rows == 3  # only this process's rows were parsed
