"""Local JSON files with malformed lines: skipped and counted as invalid_json with file:line, like bad rows."""

import collections
import gzip
import json

import datasets
import pytest

from rlhfjax.data import hh, sources
from rlhfjax.data.examples import PreferencePair
from rlhfjax.data.hh import load_hh, load_sft
from rlhfjax.data.sources import BadDataError, load_rows

Q = "\n\nHuman: q\n\nAssistant:"


def pair(i):
    return {"chosen": f"{Q} good {i}", "rejected": f"{Q} bad {i}"}


# Rows every path must treat alike: good pairs, a number where text should be, a missing field.
ROWS = [pair(0), {"chosen": 3, "rejected": f"{Q} x"}, pair(1), {"rejected": f"{Q} y"}, pair(2)]
EXPECTED = [PreferencePair(Q, f"good {i}", f"bad {i}") for i in range(3)]


def write_lines(path, lines):
    text = "".join(line + "\n" for line in lines)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_malformed_lines_are_skipped_and_counted_with_file_and_line(tmp_path, name):
    lines = [json.dumps(r) for r in ROWS]
    lines.insert(2, '{"chosen": "\\n\\nHuman: q\\n\\nAssistant: a", "rejected": nul}')  # line 3
    lines.insert(4, "")  # blank lines are not rows
    lines.append('{"chosen": "\\n\\nHuman: cut short')  # line 8: an interrupted write
    path = write_lines(tmp_path / name, lines)
    pairs, report = load_hh(path, max_bad_fraction=1.0)
    assert pairs == EXPECTED
    assert report.rows == 7 and report.kept == 3
    assert dict(report.skipped) == {sources.INVALID_JSON: 2, sources.NOT_STRING: 2}
    assert report.examples[sources.INVALID_JSON].startswith(f"{path}:3: invalid JSON (")
    assert "nul}" in report.examples[sources.INVALID_JSON]
    assert report.examples[sources.NOT_STRING] == "{'chosen': 3, 'rejected': '\\n\\nHuman: q\\n\\nAssistant: x'}"


def test_too_many_malformed_lines_fail_naming_file_and_line(tmp_path):
    lines = [json.dumps(pair(i)) for i in range(8)]
    lines[5] = "{not json"
    lines[6] = '{"chosen": }'
    path = write_lines(tmp_path / "rows.jsonl", lines)
    pairs, report = load_hh(path, max_bad_fraction=2 / 8)  # exactly at the limit loads
    assert len(pairs) == 6 and report.skipped == {sources.INVALID_JSON: 2}
    with pytest.raises(BadDataError) as err:
        load_hh(path, max_bad_fraction=0.2)
    assert f"e.g. invalid_json: {path}:6: invalid JSON (" in str(err.value)
    assert "'{not json'" in str(err.value)


def test_the_same_rows_give_the_same_examples_and_counts_with_or_without_bad_lines(tmp_path):
    """Only files with bad lines are read line by line; both paths must agree on every other row, including
    rows whose columns differ (datasets fills missing columns with None, so `prompt` rows win in load_sft)."""
    rows = ROWS + [{"prompt": "hi", "response": "there"}]
    clean = write_lines(tmp_path / "clean.jsonl", [json.dumps(r) for r in rows])
    dirty = write_lines(tmp_path / "dirty.jsonl", ["{oops"] + [json.dumps(r) for r in rows] + ["]"])
    assert isinstance(load_rows(clean), datasets.Dataset)  # the fast path is untouched
    assert isinstance(load_rows(dirty), list)
    for load in (load_hh, load_sft):
        clean_examples, clean_report = load(clean, max_bad_fraction=1.0)
        dirty_examples, dirty_report = load(dirty, max_bad_fraction=1.0)
        assert dirty_examples == clean_examples, load.__name__
        two_bad_lines = collections.Counter({sources.INVALID_JSON: 2})
        assert dirty_report.skipped == clean_report.skipped + two_bad_lines, load.__name__
        assert dirty_report.rows == clean_report.rows + 2
    # The hand-checked counts behind that comparison.
    assert load_hh(clean, max_bad_fraction=1.0)[1].skipped == {sources.NOT_STRING: 3}
    sft, report = load_sft(clean, max_bad_fraction=1.0)
    assert [(e.prompt, e.response) for e in sft] == [(f"{hh.HUMAN} hi{hh.ASSISTANT}", "there")]
    assert report.skipped == {sources.NOT_STRING: 5}


def test_lines_that_are_json_but_not_objects_are_not_string_rows(tmp_path):
    lines = [json.dumps(pair(0)), "3", "[1, 2]", '"text"', json.dumps(pair(1))]
    path = write_lines(tmp_path / "rows.jsonl", lines)
    pairs, report = load_hh(path, max_bad_fraction=1.0)
    assert pairs == EXPECTED[:2] and report.skipped == {sources.NOT_STRING: 3}


def test_split_slices_and_process_shards_count_bad_lines_where_they_are(tmp_path):
    lines = [json.dumps(pair(i)) for i in range(6)]
    lines[1] = "{bad"
    path = write_lines(tmp_path / "train.jsonl", lines)
    pairs, report = load_hh(path, split="train[:3]", max_bad_fraction=1.0)
    assert [p.chosen for p in pairs] == ["good 0", "good 2"] and report.skipped == {sources.INVALID_JSON: 1}
    pairs, report = load_hh(path, split="train[3:]")
    assert [p.chosen for p in pairs] == ["good 3", "good 4", "good 5"] and not report.skipped
    shards = [load_hh(path, process_shard=(i, 2), max_bad_fraction=1.0) for i in range(2)]
    assert [[p.chosen for p in s[0]] for s in shards] == [["good 0", "good 2"], ["good 3", "good 4", "good 5"]]
    assert [s[1].skipped for s in shards] == [{sources.INVALID_JSON: 1}, {}]


def test_a_malformed_json_array_file_fails_naming_file_and_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("[\n" + json.dumps(pair(0)) + ',\n{"chosen": nul},\n' + json.dumps(pair(1)) + "\n]\n")
    with pytest.raises(BadDataError, match=f"{path}:3: invalid JSON in a JSON array file"):
        load_hh(str(path))
    path.write_text(json.dumps([pair(0), {"chosen": 1, "rejected": "x"}, pair(1)], indent=1))
    pairs, report = load_hh(str(path), max_bad_fraction=1.0)  # a valid array still loads through datasets
    assert pairs == EXPECTED[:2] and report.skipped == {sources.NOT_STRING: 1}
