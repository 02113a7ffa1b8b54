"""The comparisons a preference objective reads from a config's `data` section (the rm and dpo recipes, and any
offline method on pairs): the toy lab's annotator pools, HH-RLHF from the hub or local files, ranked lists."""

from __future__ import annotations

from rlhfjax.data.hh import load_hh, load_ranked
from rlhfjax.data.sources import is_toylab, ranked_source, resolve_source

TOYLAB_POOL = "mixed"  # the toy lab's annotator pool when data.data_dir is empty


def comparison_source(data_config) -> tuple[str, str | None]:
    """(source, data_dir) of pairwise comparisons: the toy lab's `comparisons` folder and its annotator pool
    (`data.data_dir`, default `TOYLAB_POOL`: every pool at once would repeat each pair with several labels),
    or the configured source and subset."""
    source, data_dir = resolve_source(data_config, "comparisons")
    if is_toylab(data_config) and not data_dir:
        data_dir = TOYLAB_POOL
    return source, data_dir


def load_comparisons(config, split: str, limit: int, name: str, *, whole_lists: bool = False) -> list:
    """The comparisons of `split`, reported under `name`: `PreferencePair`s of the comparison source, or with
    `data.ranked_lists` the ranked lists (best → worst) — whole with `whole_lists` (a ranked loss), else as
    every pair i < j of each list. The toy lab ranks its training prompts only, so its other splits are the
    annotator pool's pairs."""
    data = config.data
    if data.ranked_lists and not (is_toylab(data) and split != data.train_split):
        source, data_dir = ranked_source(data)
        lists, report = load_ranked(source, data_dir=data_dir, split=split, limit=limit or None)
        if whole_lists:
            report.print(f"{name} (ranked lists)")
            return lists
        pairs = [p for ranked in lists for p in ranked.pairs()]
        report.print(f"{name} (ranked lists -> {len(pairs)} pairs)")
        return pairs
    source, data_dir = comparison_source(data)
    pairs, report = load_hh(source, data_dir=data_dir, split=split, limit=limit or None)
    report.print(name)
    return pairs
