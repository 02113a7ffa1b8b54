"""THE training loop, shared by offline and online recipes: a step function and a few hooks.

`run_loop(state, step_fn, num_steps=..., hooks=[...])` calls `step_fn(state, step) -> (state, metrics)` for
each step after the one the state is at. An offline step is one `update` on the next data batch
(`offline_step`); an online step is one iteration of an RL method (sample, score, update). Everything around
the step is a hook, in the manner of levanter's `add_hook(every=N)`, run in list order after each step it is
due at:

    StopAt(k)                        end after step k (schedules still sized for the whole run)
    Evaluate(fn, every, at_start)    merge fn(state)'s metrics into that step's record (step 0: the initial state)
    Log(run_dir, every, config=...)  metrics.jsonl + TensorBoard, the run's config.json, a line per record
    Checkpoint(checkpointer, data_iter, every, ...)   resume from the latest checkpoint; save state + data position

Every hook is also due at the last step, so an evaluated step is always logged and the end of a run is always
checkpointed. Before the first hook due at a step the loop checks the non-finite guard (one scalar fetch).
Everything random lives in the state, so a resumed run replays the uninterrupted one bit for bit.

Preemption: SIGTERM (a TPU VM's or spot instance's notice) or SIGINT (Ctrl-C, a notebook's interrupt) while
the loop runs lets the current step finish, checkpoints it (every process of a multi-process run agrees on the
step), flushes the logs and raises `errors.Preempted` (the CLI's exit status 75). Logging and evals stay on
their schedule, so the resumed run's records are the uninterrupted run's. A second signal stops at once.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any, Callable

import jax
from tqdm.auto import tqdm

from rlhfjax import distributed
from rlhfjax.errors import Preempted
from rlhfjax.train.checkpoint import Checkpointer
from rlhfjax.train.metrics import MetricsWriter, drop_records_after, write_config
from rlhfjax.train.state import TrainState
from rlhfjax.train.update import check_nonfinite, update

# Step-keyed JSONL logs that evals append to in a run directory (sft, the online runner, dpo): trimmed
# on resume like metrics.jsonl, so a killed-and-resumed run holds each eval's samples once.
STEP_LOGS = ("samples.jsonl",)

StepFn = Callable[[Any, int], tuple[Any, dict]]


@dataclasses.dataclass
class StepInfo:
    """What hooks see after a step (step 0: a fresh run's initial state, before any step)."""

    state: Any
    step: int
    metrics: dict  # the step's metrics; Evaluate adds its own
    first: bool = False  # the first step this process runs
    last: bool = False  # the last step of this run (or of this piece of it: StopAt)
    evaluated: bool = False
    preempted: bool = False  # a signal stops the run after this step (checkpointed; nothing else changes)


class Hook:
    """Something the loop does after the steps it is due at: every `every` steps (0: never periodically) and the
    last one, by default."""

    every: int = 0

    def due(self, info: StepInfo) -> bool:
        return info.step > 0 and (info.last or (self.every > 0 and info.step % self.every == 0))

    def resume(self, state) -> tuple[Any, int | None]:
        """(state to start from, the step it was restored at or None)."""
        return state, None

    def end(self, num_steps: int) -> int:
        """The last step to run."""
        return num_steps

    def open(self, start: int, end: int, resumed: int | None) -> None:
        pass

    def __call__(self, info: StepInfo) -> None:
        pass

    def close(self) -> None:
        pass


class StopAt(Hook):
    """`step` > 0: stop after that step instead of the run's last, evaluated and checkpointed like a last step,
    with everything else (schedules sized by the whole run's steps included) unchanged; so a later run with a
    larger `step` continues the same run exactly (the notebook API's "k more steps")."""

    def __init__(self, step: int):
        self.step = int(step)

    def due(self, info: StepInfo) -> bool:
        return False

    def end(self, num_steps: int) -> int:
        return min(num_steps, self.step) if self.step > 0 else num_steps


class Evaluate(Hook):
    """`fn(state) -> metrics` every `every` steps and at the last, merged into that step's record; `at_start`:
    also a fresh run's initial state, logged as step 0."""

    def __init__(self, fn: Callable[[Any], dict], every: int = 0, at_start: bool = False):
        self.fn, self.every, self.at_start = fn, int(every), at_start

    def due(self, info: StepInfo) -> bool:
        return self.at_start if info.step == 0 else super().due(info)

    def __call__(self, info: StepInfo) -> None:
        info.metrics.update(self.fn(info.state))
        info.evaluated = True


def _log_line(record: dict, keys=None) -> str:
    """One compact line: step, then the given keys and every eval/ metric (default: loss and every
    eval/ and reward/ metric)."""
    prefixes = ("eval/",) if keys else ("eval/", "reward/")
    extra = sorted(k for k in record if k.startswith(prefixes) and k not in (keys or ()))
    keys = [*(keys or ["loss"]), *extra]
    return f"step {record['step']}: " + " ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)


class Log(Hook):
    """The run directory's record of the run: `config.json` (written when the loop starts), `metrics.jsonl` and
    TensorBoard every `every` steps, at the first step this process runs, the last, and every evaluated step;
    on resume, the lines a killed process wrote after the restored checkpoint are dropped (here and in the evals'
    `STEP_LOGS`). Each record is printed as one line, or shown on a progress bar (`progress`). `records` holds
    what this process logged."""

    def __init__(self, run_dir: str, every: int = 1, *, config: dict | None = None, keys=None,
                 progress: bool = False, name: str = "train"):
        self.run_dir, self.every, self.config, self.keys = run_dir, int(every), config, keys
        self.progress, self.name, self.records = progress, name, []

    def open(self, start: int, end: int, resumed: int | None) -> None:
        if self.config is not None:
            write_config(self.run_dir, self.config)
        self.writer = MetricsWriter(self.run_dir, resume_step=resumed)
        if resumed is not None:
            for log in STEP_LOGS:
                drop_records_after(os.path.join(self.run_dir, log), resumed)
        self.bar = tqdm(total=end, initial=start, disable=not self.progress, desc=self.name)

    def due(self, info: StepInfo) -> bool:
        return info.evaluated or info.first or super().due(info)

    def __call__(self, info: StepInfo) -> None:
        self.records.append({"step": info.step, **self.writer.write(info.step, info.metrics)})
        self.bar.update(info.step - self.bar.n)
        if not self.progress:
            print(f"[{self.name}] " + _log_line(self.records[-1], self.keys), flush=True)
        elif "loss" in self.records[-1]:
            self.bar.set_postfix(loss=f"{self.records[-1]['loss']:.4g}")

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def restore_or_init(checkpointer: Checkpointer | None, template, data_iter,
                    shardings=None) -> tuple[Any, int | None]:
    """The newest readable checkpoint into (state, iterator) if there is one (an unreadable newer one is reported
    and set aside: `Checkpointer.restore_newest_readable`); else the template, untouched."""
    if checkpointer is None or checkpointer.latest_step() is None:
        return template, None
    state, data_state, _, step = checkpointer.restore_newest_readable(template, shardings=shardings)
    data_iter.load_state_dict(data_state)
    return state, step


class Checkpoint(Hook):
    """Resume from `checkpointer`'s latest checkpoint (state onto its template's or `shardings`' layout, and the
    data iterator's position); save both, with `config`, every `every` steps and at the last."""

    def __init__(self, checkpointer: Checkpointer, data_iter, every: int = 0, *, config: dict | None = None,
                 shardings=None):
        self.checkpointer, self.data_iter, self.every = checkpointer, data_iter, int(every)
        self.config, self.shardings = config, shardings

    def resume(self, state):
        return restore_or_init(self.checkpointer, state, self.data_iter, self.shardings)

    def due(self, info: StepInfo) -> bool:
        return super().due(info) or info.preempted

    def __call__(self, info: StepInfo) -> None:
        self.checkpointer.save(info.step, info.state, self.data_iter.state_dict(), self.config)

    def close(self) -> None:
        self.checkpointer.manager.wait_until_finished()


def offline_step(data_iter, loss_fn, *, frozen: Any = None, loss_config: Any = None, prepare_batch=None,
                 train_state_of=lambda s: s, with_train_state=lambda s, train: train) -> StepFn:
    """Step function of a dataset objective: one `update` on the next batch of `data_iter` (`prepare_batch`, e.g.
    `parallel.shard_batch` on a mesh, maps host batches to device arrays). A state that wraps its TrainState
    (`train_state_of`, `with_train_state`) keeps the rest as it is."""

    def step(state, _: int):
        batch = next(data_iter)
        if prepare_batch is not None:
            batch = prepare_batch(batch)
        train, metrics = update(train_state_of(state), batch, loss_fn, frozen, loss_config)
        return with_train_state(state, train), metrics

    return step


class StopSignals:
    """While open: SIGTERM and SIGINT ask the loop to stop after its current step (`requested`, agreed by every
    process); a second one raises KeyboardInterrupt at once. Handlers are only set from the main thread (a
    loop in another thread keeps the process's own), and the previous ones come back on close."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received, self.previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            self.__exit__()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signal.Signals(signum).name

    def requested(self) -> bool:
        return bool(distributed.agree_max(int(self.received is not None)))

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}


def run_loop(state, step_fn: StepFn, *, num_steps: int, hooks=(), step_of=lambda s: s.step,
             train_state_of=lambda s: s, max_consecutive_nonfinite: int = 5, name: str = "train"):
    """Resume if a hook restores a checkpoint, then run `step_fn` to step `num_steps` (or a `StopAt`), calling
    each hook after every step it is due at (module docstring) → the final state.

    `step_of(state)` is the step the state is at (TrainState.step offline, the iteration online);
    `train_state_of(state)` its TrainState, for the non-finite guard (`max_consecutive_nonfinite` skipped steps
    in a row raise; 0 = never)."""
    resumed = None
    for hook in hooks:
        state, at = hook.resume(state)
        resumed = at if at is not None else resumed
    if resumed is not None:
        print(f"{name}: resumed from the checkpoint at step {resumed}", flush=True)
    start = int(jax.device_get(step_of(state)))
    end = min([num_steps, *(hook.end(num_steps) for hook in hooks)])
    if end <= start:
        print(f"{name}: nothing to run: the run is at step {start} of {end}", flush=True)
    for hook in hooks:
        hook.open(start, end, resumed)

    def after(info: StepInfo) -> None:
        checked = info.step == 0
        for hook in hooks:
            if hook.due(info):
                if not checked:
                    check_nonfinite(train_state_of(info.state), max_consecutive_nonfinite)
                    checked = True
                hook(info)

    try:
        with StopSignals() as signals:
            if start == 0 and end > 0:
                after(StepInfo(state, 0, {}))
            for step in range(start + 1, end + 1):
                state, metrics = step_fn(state, step)
                stop = step < end and signals.requested()
                after(StepInfo(state, step, dict(metrics), first=step == start + 1, last=step == end, preempted=stop))
                if stop:
                    raise Preempted(step, signals.received or "a signal to another process",
                                    checkpointed=any(isinstance(h, Checkpoint) for h in hooks))
    finally:
        for hook in hooks:
            hook.close()
    return state


def train(state: TrainState, data_iter, loss_fn, *, num_steps: int, run_dir: str, frozen: Any = None,
          loss_config: Any = None, config: dict | None = None, checkpointer: Checkpointer | None = None,
          save_every: int = 0, log_every: int = 1, max_consecutive_nonfinite: int = 5, eval_fn=None,
          eval_every: int = 0) -> tuple[TrainState, list[dict[str, float]]]:
    """`run_loop` with `offline_step`: train a dataset objective to `state.step == num_steps` on the host's
    devices as they are (the recipes' `offline.fit` adds the mesh and the run's config) → (state, logged
    records); `config` (a dict) goes to config.json and every checkpoint."""
    log = Log(run_dir, log_every, config=config)
    hooks = [*([Evaluate(eval_fn, eval_every)] if eval_fn is not None else []), log,
             *([Checkpoint(checkpointer, data_iter, save_every, config=config)] if checkpointer is not None else [])]
    step_fn = offline_step(data_iter, loss_fn, frozen=frozen, loss_config=loss_config)
    state = run_loop(state, step_fn, num_steps=num_steps, hooks=hooks,
                     max_consecutive_nonfinite=max_consecutive_nonfinite)
    return state, log.records
