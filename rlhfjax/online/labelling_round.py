"""One labelling round of iterated online RLHF, as files in a round's folder, each step resumable.

    sample_tasks  policies ─▶ <prefix>pairs.jsonl, <prefix>tasks.jsonl (what people label), <prefix>sampling.json
    comparisons   <prefix>tasks.jsonl + <prefix>labels.jsonl ─▶ <prefix>comparisons.jsonl (HH format)
    pm_metrics    a PM directory scored on a comparisons file (accuracy, calibration; gold agreement on the toy lab)

Labels come from the toy lab's simulated annotators (`labeller="simulated"`, a pool of `data.toylab.annotators`)
or from people (`"external"`): then `comparisons` returns None until `<prefix>labels.jsonl` is there. Every
file is written atomically (`data.labelling.write_jsonl`, `train.metrics.write_json`) and a step whose output
exists is skipped, so a re-run continues where one stopped.

A labels file is read like every other data file (`data.sources.load_rows` and `parse_rows`, :func:`read_labels`):
a bad row is skipped and counted by reason in a `LoadReport`, never a traceback. Reasons: `invalid_json` (a line
that does not parse, reported as file:line), `not_string` (a line that is not an object), `unknown_id` (no task
has that id), `bad_choice` (not "a", "b" or "tie"), `tie` (a valid label, but no comparison to train on).
Duplicates: the first valid label of a task is its label and every later one counts as `duplicate_id`; when a
task's valid labels do not all agree, none is believed: its first label is skipped too (`conflicting_choice`) and
the task counts as unlabelled. Tasks without a usable label (none given, or conflicting) are reported by count;
the round continues without them while their fraction is at most `max_unlabelled_fraction`
(`iterate.max_unlabelled_fraction`) and some task is labelled, else it waits as for a missing labels file
(nothing written, so the next run reads the labels again).
"""

from __future__ import annotations

import dataclasses
import json
import os

from rlhfjax import parallel
from rlhfjax.analysis.calibration import pair_metrics
from rlhfjax.data.hh import join_transcript, load_hh
from rlhfjax.data.labelling import CHOICES, export_tasks, read_jsonl, write_jsonl
from rlhfjax.data.sources import INVALID_JSON, InvalidLine, LoadReport, load_rows, parse_rows
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


# Skip reasons of a labels file, besides `data.sources`' invalid_json and not_string (module docstring).
UNKNOWN_ID = "unknown_id"
BAD_CHOICE = "bad_choice"
TIE = "tie"
DUPLICATE_ID = "duplicate_id"  # a later label of a task already labelled
CONFLICTING_CHOICE = "conflicting_choice"  # the first label of a task whose labels disagree
_SHOWN = 5  # invalid lines (file:line) and unlabelled ids quoted in the report; the counts cover all


@dataclasses.dataclass
class Labels:
    """A labels file read against its tasks (:func:`read_labels`)."""

    tasks: dict  # task id → task row, in task order
    choices: dict  # task id → "a" | "b" | "tie": the label of each consistently labelled task, in file order
    repeated: dict  # task id → every valid choice given, for tasks labelled more than once
    report: LoadReport  # rows read, kept (comparisons) and skipped by reason
    invalid_lines: list  # an `InvalidLine` per line that is not JSON

    @property
    def conflicting(self) -> list:
        """Tasks labelled with different choices: every label of theirs is dropped."""
        return [i for i, c in self.repeated.items() if len(set(c)) > 1]

    @property
    def unlabelled(self) -> list:
        """Tasks without a usable label (none given, or conflicting ones), in task order."""
        return [i for i in self.tasks if i not in self.choices]

    @property
    def unlabelled_fraction(self) -> float:
        return len(self.unlabelled) / len(self.tasks) if self.tasks else 0.0


def read_labels(tasks_path: str, labels_path: str) -> Labels:
    """The labels in `labels_path` (`{"id", "choice"}` rows) of the tasks in `tasks_path`, through the data
    loaders' `load_rows` and `parse_rows`: bad rows, duplicates and conflicts skipped and counted (module
    docstring); never raises for the labels' content."""
    tasks = {t["id"]: t for t in read_jsonl(tasks_path)}  # written by `sample_tasks`, atomically
    given: dict = {}  # task id → every valid choice, in file order

    def parse(row, report):
        task_id, choice = row.get("id"), row.get("choice")
        if not isinstance(task_id, str) or task_id not in tasks:
            report.skip(UNKNOWN_ID, row)
        elif not isinstance(choice, str) or choice not in CHOICES:
            report.skip(BAD_CHOICE, row)
        elif task_id in given:
            given[task_id].append(choice)
            report.skip(DUPLICATE_ID, row)
        else:
            given[task_id] = [choice]
            return task_id, choice, row
        return None

    with open(labels_path, "rb") as f:
        blank = not f.read().strip()  # an empty file (made before labelling starts) holds no labels yet
    rows = [] if blank else load_rows(labels_path)  # `datasets` refuses a file without rows
    firsts, report = parse_rows(rows, parse, source=labels_path, max_bad_fraction=1.0)
    choices = {}
    for task_id, choice, row in firsts:
        if len(set(given[task_id])) > 1:
            report.skip(CONFLICTING_CHOICE, row)
            continue
        choices[task_id] = choice
        if choice == "tie":
            report.skip(TIE, row)
    report.kept = sum(c != "tie" for c in choices.values())
    invalid = [r for r in rows if isinstance(r, InvalidLine)] if isinstance(rows, list) else []
    return Labels(tasks, choices, {i: c for i, c in given.items() if len(c) > 1}, report, invalid)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report_labels(labels: Labels, max_unlabelled_fraction: float) -> bool:
    """Print what reading the labels did (counts by reason, the file:line of each invalid line, an example per
    other reason, duplicates and unlabelled tasks) → whether the round can go on with them."""
    report = labels.report
    report.print("labels")
    for line in labels.invalid_lines[:_SHOWN]:
        print(f"  {line!r}", flush=True)
    if len(labels.invalid_lines) > _SHOWN:
        print(f"  … and {len(labels.invalid_lines) - _SHOWN} more invalid lines", flush=True)
    for reason in sorted(set(report.skipped) - {INVALID_JSON, TIE, DUPLICATE_ID, CONFLICTING_CHOICE}):
        print(f"  e.g. {reason}: {report.examples[reason]}", flush=True)
    if labels.repeated:
        conflicting = labels.conflicting
        same = len(labels.repeated) - len(conflicting)
        dropped = sum(len(labels.repeated[i]) for i in conflicting)
        print(f"labels: {_plural(report.skipped[DUPLICATE_ID], 'duplicate_id row')} (tasks labelled more than "
              f"once): {_plural(same, 'task')} with the same choice each time (the first label kept), "
              f"{_plural(len(conflicting), 'task')} with conflicting choices (all {dropped} of their labels "
              f"dropped{': ' + ', '.join(conflicting[:_SHOWN]) if conflicting else ''})", flush=True)
    missing = labels.unlabelled
    if not missing:
        return True
    n_conflicting, fraction = len(labels.conflicting), labels.unlabelled_fraction
    within = fraction <= max_unlabelled_fraction
    go_on = within and bool(labels.choices)  # never a round without a single label
    print(f"labels: {len(missing)} of {_plural(len(labels.tasks), 'task')} without a usable label "
          f"({len(missing) - n_conflicting} unlabelled, {n_conflicting} conflicting; e.g. "
          f"{', '.join(missing[:_SHOWN])}): {100 * fraction:.1f}% {'<=' if within else '>'} "
          f"iterate.max_unlabelled_fraction {max_unlabelled_fraction:g}: "
          + (f"continuing with the {len(labels.choices)} labelled ({report.kept} comparisons)" if go_on else
             "waiting for labels (label them, or raise the fraction, and run again)"), flush=True)
    return go_on


def comparisons(folder: str, prefix: str, *, labeller: str, pool: str, seed: int,
                max_unlabelled_fraction: float = 0.0) -> str | None:
    """`<prefix>comparisons.jsonl` from the tasks and their labels → its path; None while external labels are
    missing, or while more than `max_unlabelled_fraction` of the tasks have no usable label. Bad rows,
    duplicates, ties and unlabelled tasks are counted and reported, not trained on (:func:`read_labels`)."""
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
    read = read_labels(tasks, labels)
    if not report_labels(read, max_unlabelled_fraction):
        return None
    rows = []
    for task_id, choice in read.choices.items():
        if choice == "tie":
            continue
        task = read.tasks[task_id]
        good, bad = ((task["response_a"], task["response_b"]) if choice == "a"
                     else (task["response_b"], task["response_a"]))
        rows.append({"chosen": join_transcript(task["prompt"], good),
                     "rejected": join_transcript(task["prompt"], bad), "id": task_id})
    write_jsonl(out, rows)
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
