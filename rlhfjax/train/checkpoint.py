"""Orbax checkpoints of TrainState + data-iterator position + resolved config.

One checkpoint step = `state` (StandardSave: arrays, any sharding), `data` and `config` (JSON).
Orbax writes to a temporary directory and renames it when complete, so a crash mid-save never
leaves a half checkpoint that `latest_step()` would pick. Restore takes a template state whose
shardings decide the layout, so a checkpoint saved on one mesh restores onto any other.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

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

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
