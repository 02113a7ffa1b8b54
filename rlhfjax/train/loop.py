"""Minimal host training loop: batches -> update -> metrics -> checkpoints, resumable exactly.

The data iterator must provide `__next__`, `state_dict()` (JSON) and `load_state_dict(d)`.
Resume = restore (state, iterator position) from the latest checkpoint; everything random lives in
`TrainState.rng`, so the resumed run replays the uninterrupted one bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax
from tqdm.auto import tqdm

from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.metrics import MetricsWriter, write_config
from rlhfjax.train.state import TrainState
from rlhfjax.train.update import check_nonfinite, update


def _log_line(record: dict) -> str:
    """One compact line: step, loss and every eval/reward metric."""
    keys = ["loss"] + sorted(k for k in record if k.startswith(("eval/", "reward/")))
    return f"step {record['step']}: " + " ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)


def restore_or_init(checkpointer: Checkpointer | None, template: TrainState, data_iter,
                    shardings=None) -> tuple[TrainState, int | None]:
    """Latest checkpoint into (state, iterator) if there is one; else the template, untouched."""
    if checkpointer is None or checkpointer.latest_step() is None:
        return template, None
    state, data_state, _, step = checkpointer.restore(template, shardings=shardings)
    data_iter.load_state_dict(data_state)
    return state, step


def train(state: TrainState, data_iter, loss_fn, *, num_steps: int, run_dir: str,
          frozen: Any = None, loss_config: Any = None, config_dict: dict | None = None,
          checkpointer: Checkpointer | None = None, save_every: int = 0, log_every: int = 1,
          max_consecutive_nonfinite: int = 5, prepare_batch=None, progress: bool = True,
          resumed_from: int | None = None, eval_fn=None,
          eval_every: int = 0) -> tuple[TrainState, list[dict[str, float]]]:
    """Run until `state.step == num_steps`. Returns the final state and the logged metrics.

    `prepare_batch` (e.g. `parallel.shard_batch` with a mesh) maps host batches to device arrays.
    `eval_fn(state) -> dict` runs every `eval_every` steps and at the last step; its metrics are
    logged with that step's record (so a step is always logged when it is evaluated).
    """
    if config_dict is not None:
        write_config(run_dir, config_dict)
    writer = MetricsWriter(run_dir, resume_step=resumed_from)
    start = int(jax.device_get(state.step))
    history = []
    bar = tqdm(total=num_steps, initial=start, disable=not progress, desc="train")
    try:
        for step in range(start + 1, num_steps + 1):
            batch = next(data_iter)
            if prepare_batch is not None:
                batch = prepare_batch(batch)
            state, metrics = update(state, batch, loss_fn, frozen, loss_config)
            last = step == num_steps
            evaluating = eval_fn is not None and ((eval_every and step % eval_every == 0) or last)
            if step % log_every == 0 or last or evaluating:
                if evaluating:
                    metrics = {**metrics, **eval_fn(state)}
                history.append({"step": step, **writer.write(step, metrics)})
                if not progress:
                    print(_log_line(history[-1]), flush=True)
                bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")
                check_nonfinite(state, max_consecutive_nonfinite)
            if checkpointer is not None and save_every and (step % save_every == 0 or last):
                check_nonfinite(state, max_consecutive_nonfinite)
                checkpointer.save(step, state, data_iter.state_dict(), config_dict)
            bar.update(1)
    finally:
        bar.close()
        writer.close()
        if checkpointer is not None:
            checkpointer.manager.wait_until_finished()
    return state, history
