"""Run-dir metrics: one JSON line per logged step (`metrics.jsonl`) plus TensorBoard scalars.

In a multi-process run only process 0 writes files (`rlhfjax.distributed`); every process still gets the
logged records back, so code after the loop sees the same values everywhere."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from rlhfjax import atomic_files
from rlhfjax.atomic_files import atomic_open

def drop_records_after(path: str, step: int) -> None:
    """Keep only the records of a step-keyed JSONL log (metrics.jsonl, samples.jsonl) with step <= `step`:
    what a resumed run does to the lines a killed process wrote after its last checkpoint, so each step's
    records appear once. Atomic (a crash leaves the old or the new file); a missing file is left missing."""
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    with open(path) as f:
        keep = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= step]
    with atomic_open(path) as f:
        f.writelines(keep)


class MetricsWriter:
    """Append-only JSONL + TensorBoard writer.

    `resume_step`: when a run restarts from a checkpoint, lines logged after that step by the
    killed process are dropped, so the file holds each step exactly once.
    """

    def __init__(self, run_dir: str, resume_step: int | None = None, tensorboard: bool = True):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._file = self._tb = None
        if jax.process_index() != 0:  # records only
            return
        os.makedirs(run_dir, exist_ok=True)
        if resume_step is not None:
            drop_records_after(self.path, resume_step)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(run_dir, "tb"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Fetch metrics to host (one transfer) and write them; returns the plain floats."""
        host = {k: float(np.asarray(v)) for k, v in jax.device_get(dict(metrics)).items()}
        if self._file is None:
            return host
        self._file.write(json.dumps({"step": int(step), **host}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in host.items():
                self._tb.add_scalar(k, v, int(step))
        return host

    def close(self):
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict[str, float]]:
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def write_config(run_dir: str, config) -> None:
    """`atomic_files.write_config` on process 0."""
    if jax.process_index() == 0:
        atomic_files.write_config(run_dir, config)


def write_json(path: str, payload) -> None:
    """Atomic JSON write (a summary is either the old file or the whole new one); process 0 only."""
    if jax.process_index() != 0:
        return
    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
