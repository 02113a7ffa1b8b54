"""One labelling round of iterated online RLHF, as files in a round's folder, each step resumable.

    sample_tasks  policies ─▶ <prefix>pairs.jsonl, <prefix>tasks.jsonl (what people label), <prefix>sampling.json
    comparisons   <prefix>tasks.jsonl + <prefix>labels.jsonl ─▶ <prefix>comparisons.jsonl (HH format)
    pm_metrics    a PM directory scored on a comparisons file (accuracy, calibration; gold agreement on the toy lab)

Labels come from the toy lab's simulated annotators (`labeller="simulated"`, a pool of `data.toylab.annotators`)
or from people (`"external"`): then `comparisons` returns None until `<prefix>labels.jsonl` is there. Every
file is written atomically (`data.labelling.write_jsonl`, `train.metrics.write_json`) and a step whose output
exists is skipped, so a re-run continues where one stopped.
"""

from __future__ import annotations

import json
import os

from rlhfjax import parallel
from rlhfjax.analysis.calibration import pair_metrics
from rlhfjax.data.hh import load_hh
from rlhfjax.data.labelling import export_tasks, import_labels, write_jsonl
from rlhfjax.errors import ConfigError
from rlhfjax.online import comparisons as comparison_sampling
from rlhfjax.train.metrics import write_json



def sample_tasks(folder: str, prefix: str, load_policies, prompts: list, num: int, *, encoder, tokenizer,
                 sampling, mesh, batch_size: int, seed: int, earlier_frac: float, id_prefix: str) -> dict:
    """`num` pairs from the policies `load_policies()` returns (the last is the current one;
    `online.comparisons.sample_pairs`; called only when the pairs are still to be drawn) as labelling tasks and
    pair rows → the sampling counts (identical pairs dropped, pairs from earlier policies)."""
    pairs_path = os.path.join(folder, f"{prefix}pairs.jsonl")
    counts_path = os.path.join(folder, f"{prefix}sampling.json")
    if not os.path.exists(pairs_path):
        policies = load_policies()  # placed on `mesh` by their own shardings, outside the activated mesh
        with parallel.activate(mesh):
            rows, counts = comparison_sampling.sample_pairs(
                policies, prompts, num, encoder=encoder, tokenizer=tokenizer, sampling=sampling, mesh=mesh,
                batch_size=batch_size, seed=seed, earlier_frac=earlier_frac, id_prefix=id_prefix)
        write_json(counts_path, counts)
        export_tasks(os.path.join(folder, f"{prefix}tasks.jsonl"), [t["prompt"] for t in rows],
                     [t["response_a"] for t in rows], [t["response_b"] for t in rows], ids=[t["id"] for t in rows])
        write_jsonl(pairs_path, rows)  # last: its presence marks the step done
    with open(counts_path) as f:
        return json.load(f)


def comparisons(folder: str, prefix: str, *, labeller: str, pool: str, seed: int) -> str | None:
    """`<prefix>comparisons.jsonl` from the tasks and their labels → its path; None while external labels are
    missing. Ties and unknown ids are counted and reported, not trained on (`data.labelling.import_labels`)."""
    out = os.path.join(folder, f"{prefix}comparisons.jsonl")
    if os.path.exists(out):
        return out
    tasks, labels = os.path.join(folder, f"{prefix}tasks.jsonl"), os.path.join(folder, f"{prefix}labels.jsonl")
    if not os.path.exists(labels):
        if labeller == "external":
            return None
        from rlhfjax.data.toylab.annotators import POOLS, label_tasks

        if pool not in POOLS:
            raise ConfigError(f"iterate.pool={pool!r}", f"use one of: {', '.join(POOLS)}")
        label_tasks(tasks, labels, POOLS[pool], seed)
    report = import_labels(tasks, labels, out)
    print(f"labels {labels}: {report.summary()}", flush=True)
    return out


def pm_metrics(pm_dir: str, comparisons_path: str, *, encoder, mesh, batch_size: int, dtype: str,
               toylab: bool, prefix: str = "") -> dict:
    """`analysis.calibration.pair_metrics` of the PM in `pm_dir` on a comparisons file (with the gold reward's
    preference on the toy lab), keys prefixed by `prefix`."""
    pairs, _ = load_hh(comparisons_path, split="train")
    margin = comparison_sampling.pair_margins(pm_dir, pairs, encoder=encoder, mesh=mesh, batch_size=batch_size,
                                              dtype=dtype)
    gold = None
    if toylab:
        from rlhfjax.data.toylab import gold_margins

        gold = gold_margins(pairs)
    return {f"{prefix}{k}": v for k, v in pair_metrics(margin, gold).items()}
