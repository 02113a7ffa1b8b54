"""Orbax checkpoints of TrainState + data-iterator position + resolved config.

One checkpoint step = `state` (StandardSave: arrays, any sharding), `data` and `config` (JSON).
Orbax writes to a temporary directory and renames it when complete, so a crash mid-save never
leaves a half checkpoint that `latest_step()` would pick. Restore takes a template state whose
shardings decide the layout, so a checkpoint saved on one mesh restores onto any other.

Files damaged after the fact (a full disk, a copy cut short, a deleted shard, a checkpoint of another
model) are another matter: `restore_newest_readable` tries the checkpoints newest first, says in one line
why each unreadable one was passed over, and sets those aside (`<dir>.unreadable/<step>`, never deleted) so
the resumed run can write those steps again.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from rlhfjax import distributed
from rlhfjax.errors import BadInputError
from rlhfjax.train.state import TrainState


def abstract_state(template: TrainState, shardings=None) -> TrainState:
    """ShapeDtypeStructs carrying the target shardings (the template's own when none given)."""
    def leaf(x, s=None):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s if s is not None else x.sharding)

    if shardings is None:
        return jax.tree.map(leaf, template)
    return jax.tree.map(leaf, template, shardings)


def latest_step(directory: str) -> int | None:
    """The step of the newest checkpoint in `directory` (None: none, or no such directory)."""
    if not os.path.isdir(directory):
        return None
    checkpointer = Checkpointer(directory)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = False):
        # Sync by default: the update donates the state's buffers, and the next step must not
        # start before the save has read them.
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def save(self, step: int, state: TrainState, data_state: dict[str, Any] | None = None,
             config: dict[str, Any] | None = None, force: bool = True) -> bool:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state or {}),
                                  config=ocp.args.JsonSave(config or {}))
        return self.manager.save(int(step), args=args, force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, template: TrainState, step: int | None = None, shardings=None):
        """-> (state, data_state, config, step). `template` fixes structure, static fields (tx)
        and, unless `shardings` is given, the target sharding of every leaf."""
        self.manager.wait_until_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state(template, shardings)),
            data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
        return out["state"], out["data"], out["config"], step

    def restore_newest_readable(self, template: TrainState, shardings=None):
        """`restore` of the newest checkpoint that can be read into `template` → (state, data_state, config,
        step), or None when the directory holds no checkpoint. Each newer one that cannot be read (missing or
        truncated files, other shapes) is reported in one line and moved to `<dir>.unreadable/<step>`; when none
        can be read, `BadInputError` lists why, and nothing is moved. Every process must call it: they agree
        on each attempt (one process's unreadable shard fails it for all)."""
        self.manager.wait_until_finished()
        failed = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                out, why = self.restore(template, step, shardings), ""
            except Exception as e:  # orbax, tensorstore, json: whatever stops these files serving this run
                out, why = None, _one_line(e)
            if distributed.agree_max(int(out is None)):
                failed.append((step, why or "unreadable on another process"))
                print(f"checkpoint at step {step} in {self.manager.directory} cannot be restored ({failed[-1][1]}); "
                      "trying the next older one", flush=True)
                continue
            if failed:
                self._set_aside([s for s, _ in failed])
            return out
        if failed:
            raise BadInputError(
                f"no readable checkpoint in {self.manager.directory}: "
                + "; ".join(f"step {s}: {why}" for s, why in failed),
                "nothing was moved or deleted; repair the files, or resume elsewhere with a new --workdir")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Unreadable step folders → `<dir>.unreadable/<step>[-<time>]` (process 0), so their steps can be saved
        again; the manager then re-reads its directory."""
        directory = os.fspath(self.manager.directory)
        if distributed.is_primary():
            aside = directory.rstrip("/") + ".unreadable"
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                target = os.path.join(aside, str(step))
                if os.path.exists(target):
                    target += time.strftime("-%Y%m%d-%H%M%S")
                os.replace(os.path.join(directory, str(step)), target)
                print(f"checkpoint at step {step}: moved to {target}", flush=True)
        distributed.barrier("checkpoints set aside")
        self.manager.reload()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def _one_line(e: Exception, limit: int = 200) -> str:
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
