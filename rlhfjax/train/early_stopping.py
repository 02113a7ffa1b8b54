"""Early stopping: keep the params of the best step by a validation metric, resumably."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class BestParams:
    """The best params so far by one validation metric, on device and on disk (`directory`: an orbax
    checkpoint of the params at that step with its metrics), so a resumed run still knows the best so
    far and its step. A candidate replaces the best only if strictly better (ties keep the earlier
    step) and only if it comes after it: a resumed run replays steps it has already offered."""

    def __init__(self, directory: str, metric: str = "val/loss", better=min):
        self.metric, self.better = metric, better
        self.step: int | None = None
        self.metrics: dict = {}
        self.params = None
        self.manager = ocp.CheckpointManager(os.path.abspath(directory),
                                             options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def restore(self, template) -> bool:
        """Load the saved best, placed like `template` (params); False if there is none."""
        step = self.manager.latest_step()
        if step is None:
            return False
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template)
        out = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target),
                                                                  meta=ocp.args.JsonRestore()))
        self.step, self.metrics, self.params = step, dict(out["meta"]), out["params"]
        return True

    def offer(self, step: int, metrics: dict, params) -> bool:
        """Keep `params` (copied: the next update donates them) if `metrics[self.metric]` beats the best."""
        value = metrics[self.metric]
        if self.step is not None:
            best = self.metrics[self.metric]
            if step <= self.step or value == best or self.better(value, best) != value:
                return False
        self.step, self.metrics = step, dict(metrics)
        self.params = jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), params)
        self.manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(self.params),
                                                        meta=ocp.args.JsonSave(self.metrics)), force=True)
        self.manager.wait_until_finished()
        return True

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
