"""THE training loop, shared by offline and online recipes: step → metrics → evals → checkpoints.

`run_loop(state, step_fn, ...)` calls `step_fn(state, step) -> (state, metrics)` for each step
after the one the state is at. An offline step is one `update` on the next data batch
(`offline_step`); an online step is one iteration of an RL method (sample, score, update). The
loop owns everything around it: resuming from the latest checkpoint (state + data-iterator
position), metrics (JSONL + TensorBoard), periodic evals, the non-finite guard and checkpoints.

The data iterator must provide `__next__`, `state_dict()` (JSON) and `load_state_dict(d)`.
Everything random lives in the state, so a resumed run replays the uninterrupted one bit for bit.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
from tqdm.auto import tqdm

from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.metrics import MetricsWriter, drop_records_after, write_config
from rlhfjax.train.state import TrainState
from rlhfjax.train.update import check_nonfinite, update

# Step-keyed JSONL logs that evals append to in a run directory (sft, the online runner, dpo): trimmed
# on resume like metrics.jsonl, so a killed-and-resumed run holds each eval's samples once.
STEP_LOGS = ("samples.jsonl",)

StepFn = Callable[[Any, int], tuple[Any, dict]]


def _log_line(record: dict, keys=None) -> str:
    """One compact line: step, then the given keys and every eval/ metric (default: loss and every
    eval/ and reward/ metric)."""
    prefixes = ("eval/",) if keys else ("eval/", "reward/")
    extra = sorted(k for k in record if k.startswith(prefixes) and k not in (keys or ()))
    keys = [*(keys or ["loss"]), *extra]
    return f"step {record['step']}: " + " ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)


def restore_or_init(checkpointer: Checkpointer | None, template, data_iter,
                    shardings=None) -> tuple[Any, int | None]:
    """Latest checkpoint into (state, iterator) if there is one; else the template, untouched."""
    if checkpointer is None or checkpointer.latest_step() is None:
        return template, None
    state, data_state, _, step = checkpointer.restore(template, shardings=shardings)
    data_iter.load_state_dict(data_state)
    return state, step


def offline_step(data_iter, loss_fn, *, frozen: Any = None, loss_config: Any = None, prepare_batch=None) -> StepFn:
    """Step function of a dataset objective: one `update` on the next batch of `data_iter`
    (`prepare_batch`, e.g. `parallel.shard_batch` on a mesh, maps host batches to device arrays)."""

    def step(state: TrainState, _: int):
        batch = next(data_iter)
        if prepare_batch is not None:
            batch = prepare_batch(batch)
        return update(state, batch, loss_fn, frozen, loss_config)

    return step


def run_loop(state, step_fn: StepFn, *, num_steps: int, run_dir: str, data_iter, checkpointer: Checkpointer | None,
             config_dict: dict | None = None, save_every: int = 0, log_every: int = 1, eval_fn=None,
             eval_every: int = 0, eval_at_start: bool = False, step_of=lambda s: s.step,
             train_state_of=lambda s: s, max_consecutive_nonfinite: int = 5, progress: bool = True,
             log_keys=None, shardings=None, name: str = "train",
             stop_at: int = 0) -> tuple[Any, list[dict[str, float]]]:
    """Resume if `checkpointer` holds a checkpoint, then run to step `num_steps`.

    - `stop_at` > 0: stop after that step instead (evaluated and checkpointed like a last step), with
      everything else — schedules sized by `num_steps` included — unchanged, so a later call with a
      larger `stop_at` continues the same run exactly (the notebook API's "k more steps").

    - `step_of(state)`: the step the state is at (TrainState.step offline, the iteration online);
      `train_state_of(state)`: its TrainState, for the non-finite guard.
    - `eval_fn(state) -> dict` runs every `eval_every` steps and at the last step, merged into that
      step's record (so an evaluated step is always logged); `eval_at_start` also evaluates a
      fresh run's initial state as step 0.
    - A checkpoint is written every `save_every` steps and at the last one (the end of a resumed
      run is then found finished); never after non-finite steps past the limit.
    - Logged: every `log_every` steps, the first step of this process and the last.
    Returns the final state and the records logged by this process.
    """
    state, resumed = restore_or_init(checkpointer, state, data_iter, shardings)
    if resumed is not None:
        print(f"{name}: resumed from the checkpoint at step {resumed}", flush=True)
    if config_dict is not None:
        write_config(run_dir, config_dict)
    writer = MetricsWriter(run_dir, resume_step=resumed)
    if resumed is not None:
        for name_ in STEP_LOGS:  # evals' sample logs, written next to metrics.jsonl
            drop_records_after(os.path.join(run_dir, name_), resumed)
    start = int(jax.device_get(step_of(state)))
    history: list[dict[str, float]] = []
    end = min(num_steps, stop_at) if stop_at > 0 else num_steps
    bar = tqdm(total=end, initial=start, disable=not progress, desc=name)

    def log(step, metrics):
        history.append({"step": step, **writer.write(step, metrics)})
        if not progress:
            print(f"[{name}] " + _log_line(history[-1], log_keys), flush=True)
        elif "loss" in history[-1]:
            bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")

    try:
        if eval_fn is not None and eval_at_start and start == 0 and end > 0:
            log(0, eval_fn(state))
        for step in range(start + 1, end + 1):
            state, metrics = step_fn(state, step)
            last = step == end
            evaluating = eval_fn is not None and ((eval_every and step % eval_every == 0) or last)
            if step % log_every == 0 or last or evaluating or step == start + 1:
                check_nonfinite(train_state_of(state), max_consecutive_nonfinite)
                if evaluating:
                    metrics = {**metrics, **eval_fn(state)}
                log(step, metrics)
            if checkpointer is not None and ((save_every and step % save_every == 0) or last):
                check_nonfinite(train_state_of(state), max_consecutive_nonfinite)
                checkpointer.save(step, state, data_iter.state_dict(), config_dict)
            bar.update(1)
    finally:
        bar.close()
        writer.close()
        if checkpointer is not None:
            checkpointer.manager.wait_until_finished()
    return state, history


def train(state: TrainState, data_iter, loss_fn, *, num_steps: int, run_dir: str,
          frozen: Any = None, loss_config: Any = None, config_dict: dict | None = None,
          checkpointer: Checkpointer | None = None, save_every: int = 0, log_every: int = 1,
          max_consecutive_nonfinite: int = 5, prepare_batch=None, progress: bool = True,
          eval_fn=None, eval_every: int = 0) -> tuple[TrainState, list[dict[str, float]]]:
    """`run_loop` with `offline_step`: train a dataset objective to `state.step == num_steps`."""
    step_fn = offline_step(data_iter, loss_fn, frozen=frozen, loss_config=loss_config, prepare_batch=prepare_batch)
    return run_loop(state, step_fn, num_steps=num_steps, run_dir=run_dir, data_iter=data_iter,
                    checkpointer=checkpointer, config_dict=config_dict, save_every=save_every,
                    log_every=log_every, eval_fn=eval_fn, eval_every=eval_every,
                    max_consecutive_nonfinite=max_consecutive_nonfinite, progress=progress)
