"""`data.preferences.load_comparisons`: the comparisons the rm and dpo recipes read from `config.data`."""

import json

import ml_collections

from rlhfjax.data.hh import PreferencePair, load_hh, load_ranked
from rlhfjax.data import preferences as common


def _config(**data):
    base = dict(source="toylab", data_dir="", ranked_lists=False, train_split="train", toylab_seed=0)
    return ml_collections.ConfigDict({"data": {**base, **data}})


def test_the_toy_labs_default_pool_is_the_mixed_one(toylab_data):
    """An empty data.data_dir reads one annotator pool, not every pool's copy of each pair."""
    default = common.load_comparisons(_config(toylab_dir=toylab_data), "train", 0, "train")
    mixed, _ = load_hh(f"{toylab_data}/comparisons", data_dir="mixed", split="train")
    helpful = common.load_comparisons(_config(toylab_dir=toylab_data, data_dir="helpful"), "train", 0, "train")
    assert default == mixed
    assert helpful != mixed and len({p.prompt for p in helpful}) == len({p.prompt for p in mixed})
    assert common.comparison_source(_config(toylab_dir=toylab_data).data) == (f"{toylab_data}/comparisons", "mixed")


def test_ranked_lists_whole_or_as_every_pair_and_the_toy_labs_evals_on_the_pool(toylab_data):
    config = _config(toylab_dir=toylab_data, ranked_lists=True)
    lists, _ = load_ranked(f"{toylab_data}/ranked", split="train", limit=10)
    assert common.load_comparisons(config, "train", 10, "train", whole_lists=True) == lists
    pairs = common.load_comparisons(config, "train", 10, "train")
    assert len(pairs) == sum(len(r.responses) * (len(r.responses) - 1) // 2 for r in lists) > 10
    assert pairs[0] == PreferencePair(lists[0].prompt, lists[0].responses[0], lists[0].responses[1])
    # The toy lab ranks training prompts only: its held-out split is the annotator pool's pairs.
    pool, _ = load_hh(f"{toylab_data}/comparisons", data_dir="mixed", split="test", limit=5)
    assert common.load_comparisons(config, "test", 5, "eval") == pool


def test_a_ranked_dataset_of_ones_own_gives_its_held_out_split_as_pairs(tmp_path):
    """Outside the toy lab the held-out split of ranked lists is ranked lists too (the rm recipe used to read
    it as HH pairs, which rejected every row)."""
    rows = {"train": [{"prompt": f"q{i}", "responses": [f"best {i}", f"mid {i}", f"worst {i}"]} for i in range(4)],
            "test": [{"prompt": "held out", "responses": ["a", "b", "c"]}]}
    for split, items in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    config = _config(source=str(tmp_path), ranked_lists=True)
    assert [r.responses for r in common.load_comparisons(config, "train", 0, "t", whole_lists=True)][1] == (
        "best 1", "mid 1", "worst 1")
    held_out = common.load_comparisons(config, "test", 0, "eval")
    assert [(p.chosen, p.rejected) for p in held_out] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert {p.prompt for p in held_out} == {"\n\nHuman: held out\n\nAssistant:"}
