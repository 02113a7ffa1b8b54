"""Iterated online labelling: policy samples → comparison tasks (jsonl) → labels → HH comparisons.

1. :func:`export_tasks` writes one task per line: ``{"id", "prompt", "response_a", "response_b"}``.
2. Someone labels them — people with any tool, or the toy lab's simulated annotators
   (:func:`rlhfjax.data.toylab.annotators.label_tasks`) — writing ``{"id", "choice": "a"|"b"|"tie"}`` lines.
3. :func:`import_labels` joins tasks and labels into HH-format comparisons (``{"chosen", "rejected"}``
   full transcripts) that load through :func:`rlhfjax.data.hh.load_hh` like any other data.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

from rlhfjax.atomic_files import atomic_open
from rlhfjax.data.hh import join_transcript
from rlhfjax.data.sources import LoadReport

CHOICES = ("a", "b", "tie")


def write_jsonl(path: str, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines (stable key order, UTF-8), atomically (`atomic_files.atomic_open`: a reader or a
    resumed run sees the old file or the whole new one) → number of rows."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def export_tasks(path: str, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                 *, ids: Sequence[str] | None = None, prefix: str = "task") -> int:
    """Write comparison tasks (HH prompts, two responses each) → number of tasks written."""
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError("prompts, responses_a and responses_b must have the same length")
    ids = list(ids) if ids is not None else [f"{prefix}-{i:06d}" for i in range(len(prompts))]
    return write_jsonl(path, ({"id": i, "prompt": p, "response_a": a, "response_b": b}
                              for i, p, a, b in zip(ids, prompts, responses_a, responses_b)))


def import_labels(tasks_path: str, labels_path: str, out_path: str) -> LoadReport:
    """Join tasks with labels → HH comparisons at ``out_path``; ties, unknown ids and bad choices are counted."""
    tasks = {t["id"]: t for t in read_jsonl(tasks_path)}
    report = LoadReport(source=labels_path)
    rows = []
    for label in read_jsonl(labels_path):
        report.rows += 1
        task, choice = tasks.get(label.get("id")), label.get("choice")
        if task is None:
            report.skip("unknown_id", label)
        elif choice not in CHOICES:
            report.skip("bad_choice", label)
        elif choice == "tie":
            report.skip("tie", label)
        else:
            good, bad = ((task["response_a"], task["response_b"]) if choice == "a"
                         else (task["response_b"], task["response_a"]))
            rows.append({"chosen": join_transcript(task["prompt"], good),
                         "rejected": join_transcript(task["prompt"], bad), "id": task["id"]})
    report.kept = write_jsonl(out_path, rows)
    return report
