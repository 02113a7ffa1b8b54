"""Multi-controller runs: one process per host, every process runs the same program on a global mesh.

JAX's own runtime does the work (`jax.distributed`, XLA collectives over ICI/NCCL/gloo). This module
holds what a run needs around it:

- `initialize(config.distributed)` before any other JAX call (the CLI does it):
    mode "off"   one process, whatever the environment says;
    mode "on"    `jax.distributed.initialize` with the fields below; fields left unset are detected by
                 JAX on TPU VM slices, SLURM and Open MPI (a TPU pod slice needs nothing else);
    mode "auto"  (default) "on" when a coordinator address is given (config, or `JAX_COORDINATOR_ADDRESS`
                 with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` for GPU clusters), else "off".
  On CPU the processes talk through gloo (`distributed.cpu_collectives`), which is how the test suite
  runs two processes on one machine.
- `is_primary()`: process 0 writes metrics, logs, plots, summaries and exports; every process takes part
  in the collectives that gather what it writes (`gather_tree`, `export`).
- `agree_max`: a host-side maximum over processes (the padded length of a global batch).
Orbax checkpoints are collective already: every process saves and restores its own shards.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from rlhfjax.choices import DISTRIBUTED_MODES as MODES
from rlhfjax.config_blocks import distributed_config as default_config  # config.distributed
from rlhfjax.errors import ConfigError


def _resolved(config) -> dict:
    """`jax.distributed.initialize` keywords from the config, then the environment; unset ones omitted."""
    address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    count = int(config.num_processes or os.environ.get("JAX_NUM_PROCESSES", 0))
    pid = int(config.process_id if config.process_id >= 0 else os.environ.get("JAX_PROCESS_ID", -1))
    kw = {"initialization_timeout": int(config.initialization_timeout)}
    if address:
        kw["coordinator_address"] = address
    if count:
        kw["num_processes"] = count
    if pid >= 0:
        kw["process_id"] = pid
    if config.local_device_ids:
        kw["local_device_ids"] = [int(i) for i in str(config.local_device_ids).split(",")]
    return kw


def initialize(config=None) -> bool:
    """Join the multi-process run `config` (a `default_config()` section; None = the defaults) describes.
    Returns whether this is a multi-process run. Call before anything else touches a JAX backend."""
    config = config if config is not None else default_config()
    if config.mode not in MODES:
        raise ConfigError(f"distributed.mode must be one of {MODES}, got {config.mode!r}")
    kw = _resolved(config)
    if config.mode == "off" or (config.mode == "auto" and "coordinator_address" not in kw):
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if config.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
    jax.distributed.initialize(**kw)
    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local devices, "
          f"{jax.device_count()} in all", flush=True)
    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (e.g. after process 0 wrote a file others read)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree_max(n: int) -> int:
    """The largest `n` any process holds (every process must call this, in the same order)."""
    if jax.process_count() == 1:
        return int(n)
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray(n, np.int32))))


def gather_rows(x) -> np.ndarray:
    """Every process's host rows of `x`, concatenated in process order (the rows of a global batch)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def gather_tree(tree):
    """Every array of a pytree as a full numpy value on this host (a collective when sharded across hosts)."""
    from rlhfjax.parallel import host

    return jax.tree.map(host, tree)


def export(save_fn, model_cfg, params, path: str, **kwargs) -> None:
    """`save_fn(model_cfg, params, path, **kwargs)` (e.g. `models.hf.save_pretrained`) for a run on any
    number of processes: every process gathers the params, process 0 writes, all wait until it has."""
    params = gather_tree(params) if jax.process_count() > 1 else params
    if is_primary():
        save_fn(model_cfg, params, path, **kwargs)
    barrier(f"export {path}")
