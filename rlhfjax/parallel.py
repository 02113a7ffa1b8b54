"""Mesh, logical-axis rules and sharding helpers: the ONE place mapping logical names to devices.

Mesh axes: `data` (pure data parallel), `fsdp` (batch *and* params/optimizer state sharded),
`tensor` (Megatron-style: heads/kv/mlp/vocab split). One rule table serves every strategy; a
strategy is just which mesh axes have size > 1:

    dp   -> data=-1          params replicated, batch split
    fsdp -> fsdp=-1          params sharded on `embed`, batch split
    tp   -> tensor=-1        params sharded on heads/kv/mlp/vocab, batch replicated
    (or set data/fsdp/tensor sizes explicitly, e.g. data=2, fsdp=2, tensor=2)

A logical axis whose size is not divisible by its mesh axes is left unsharded (e.g. GPT-2's 50257
vocab on tensor=8), so every shape works on every mesh.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as PS

from rlhfjax.config_blocks import mesh_config as default_mesh_config  # noqa: F401 (config.mesh)
from rlhfjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Flax resolves an array's axes left to right and never reuses a mesh
# axis, so activations ("batch", "length", "embed") get batch over data+fsdp and embed unsharded.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),  # scanned layers' stacked axis: every device holds its slice of each layer
)

STRATEGIES = {"dp": "data", "fsdp": "fsdp", "tp": "tensor"}


def mesh_shape(config, num_devices: int) -> dict[str, int]:
    """Axis sizes for a mesh config; the -1 axis takes all devices left over."""
    if config.strategy in STRATEGIES:
        sizes = {a: 1 for a in MESH_AXES}
        sizes[STRATEGIES[config.strategy]] = -1
    elif config.strategy == "custom":
        sizes = {a: int(config[a]) for a in MESH_AXES}
    else:
        raise ConfigError(f"mesh strategy must be one of {(*STRATEGIES, 'custom')}, got {config.strategy!r}")
    fill = [a for a, s in sizes.items() if s == -1]
    if len(fill) > 1:
        raise ConfigError(f"at most one mesh axis may be -1, got {fill}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if fill:
        if num_devices % fixed:
            raise ConfigError(f"{num_devices} devices are not divisible by the fixed axes {sizes}")
        sizes[fill[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, have {num_devices}")
    return sizes


def make_mesh(config=None, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    sizes = mesh_shape(config or default_mesh_config(), len(devices))
    arr = np.asarray(devices).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def single_device_mesh() -> Mesh:
    return make_mesh(default_mesh_config(), jax.devices()[:1])


@contextlib.contextmanager
def activate(mesh: Mesh, rules=LOGICAL_RULES):
    """Make the mesh and rules visible to the models' `with_logical_constraint` at trace time."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def _rule_dict(rules) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, axes in rules:
        if name not in out:  # first rule wins, like flax
            out[name] = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    return out


def logical_to_spec(logical: tuple, shape: tuple[int, ...], mesh: Mesh, rules=LOGICAL_RULES) -> PS:
    """PartitionSpec for one array: map names through the rules, never reuse a mesh axis, drop
    size-1 mesh axes and any assignment that does not divide the dimension."""
    table, used, spec = _rule_dict(rules), set(), []
    for name, dim in zip(logical, shape):
        axes = [a for a in table.get(name, ()) if a not in used and mesh.shape[a] > 1] if name else []
        while axes and dim % math.prod(mesh.shape[a] for a in axes):
            axes.pop()  # shard on fewer axes rather than fail on an uneven split
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PS(*spec)


def param_shardings(boxed_abstract_params, mesh: Mesh, rules=LOGICAL_RULES):
    """NamedShardings for a tree of (abstract) `nn.Partitioned` params; returned tree is unboxed."""
    specs = nn.get_partition_spec(boxed_abstract_params)
    shapes = nn.meta.unbox(boxed_abstract_params)
    return jax.tree.map(lambda s, x: NamedSharding(mesh, logical_to_spec(tuple(s), x.shape, mesh, rules)),
                        specs, shapes, is_leaf=lambda s: isinstance(s, PS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PS())


def init_sharded(init_fn, rng, mesh: Mesh, rules=LOGICAL_RULES):
    """Create params already sharded: `init_fn(rng)` returns boxed Linen variables' params.

    eval_shape -> shardings from the logical names -> jit(init, out_shardings=...): no full copy
    of the params ever sits on one device.
    """
    abstract = jax.eval_shape(init_fn, rng)
    shardings = param_shardings(abstract, mesh, rules)
    unboxed_init = lambda r: nn.meta.unbox(init_fn(r))  # noqa: E731
    with activate(mesh, rules):
        return jax.jit(unboxed_init, out_shardings=shardings)(rng), shardings


def model_param_shardings(model: nn.Module, sample_args: tuple, mesh: Mesh, rules=LOGICAL_RULES):
    """Shardings for `model`'s params from its logical annotations (no params are materialised)."""
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *sample_args)["params"])
    return param_shardings(abstract, mesh, rules)


def opt_state_shardings(tx, params, param_shards, mesh: Mesh):
    """Optimizer-state shardings: param-shaped leaves (Adam mu/nu) follow their
    param; everything else (counts) is replicated."""
    abstract_state = jax.eval_shape(tx.init, params)
    return optax.tree_map_params(tx, lambda _, s: s, abstract_state, param_shards,
                                 transform_non_params=lambda _: replicated(mesh),
                                 is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh, ndim: int = 2, rules=LOGICAL_RULES) -> NamedSharding:
    """Leading (batch) dim split over the data-parallel axes, the rest replicated."""
    axes = tuple(a for a in _rule_dict(rules)["batch"] if mesh.shape[a] > 1)
    lead = None if not axes else axes[0] if len(axes) == 1 else axes
    return NamedSharding(mesh, PS(lead, *([None] * (ndim - 1))))


def shard_batch(batch, mesh: Mesh, rules=LOGICAL_RULES, *, process_rows: bool = False):
    """Global device arrays from a host batch, the leading dim split over data+fsdp.

    By default the host batch is the whole global batch, the same on every process (eval batches, prompt
    lists); each process places the rows its devices hold. `process_rows=True`: it holds only this process's
    rows of the global batch, as a `BatchIterator` yields them, and the global batch is every process's rows
    in process order. One process: both are a plain device_put."""
    multi = jax.process_count() > 1
    if multi:
        check_process_rows(mesh, rules)

    def put(x):
        x, sharding = np.asarray(x), batch_sharding(mesh, np.ndim(x), rules)
        if not multi:
            return jax.device_put(x, sharding)
        if process_rows:
            return jax.make_array_from_process_local_data(sharding, x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, batch)


@functools.lru_cache(maxsize=None)  # once per mesh, not per batch
def check_process_rows(mesh: Mesh, rules=LOGICAL_RULES) -> None:
    """A multi-process run's batch rows must split over processes in order, process p holding the p-th of
    `process_count` equal blocks (what `BatchIterator` yields): the mesh's batch axes must span the processes.
    A mesh that replicates the batch across processes (tensor parallelism across hosts) is refused."""
    P = jax.process_count()
    n = data_parallel_size(mesh)
    rows: dict[int, set[int]] = {}
    for device, index in batch_sharding(mesh, 1, rules).devices_indices_map((n,)).items():
        rows.setdefault(device.process_index, set()).update(range(n)[index[0]])
    for p in range(P):
        want = set(range(p * n // P, (p + 1) * n // P))
        if n % P or rows.get(p) != want:
            raise ConfigError(f"mesh {dict(mesh.shape)}: the batch rows of process {p} are {sorted(rows.get(p, ()))}, "
                              f"not its block {sorted(want)} of {n}; the data-parallel axes (data, fsdp) must "
                              f"span the {P} processes in order (keep tensor parallelism within a host)")


def local_rows(x) -> np.ndarray:
    """The rows (leading dim) of a batch-sharded array that this process's devices hold, in order: the
    rows of the batch this process fed in (`shard_batch`). One process: the whole array."""
    if jax.process_count() == 1 or x.is_fully_replicated:
        return np.asarray(x)
    shards = sorted({s.index[0].start or 0: s for s in x.addressable_shards}.items())
    return np.concatenate([np.asarray(s.data) for _, s in shards])


def replicate_rest(tree, mesh: Mesh):
    """Every leaf not already laid out on `mesh` → replicated on it. Jitted steps return their
    scalars (step, rng, counters) that way, so a state placed like this from the start hits the
    same compiled executable on its first and every later call (no second compile)."""
    def put(x):
        s = getattr(x, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh == mesh:
            return x
        return jax.device_put(x, replicated(mesh))

    return jax.tree.map(put, tree)


def shard_like(tree, shardings):
    return jax.tree.map(jax.device_put, tree, shardings)


def initialize_distributed(enabled: bool = False, **kwargs) -> None:
    """Multi-host set-up (TPU pods / multi-node GPU); call before any other JAX call.

    `kwargs` go to `jax.distributed.initialize` (coordinator_address, num_processes, process_id);
    on TPU pods and SLURM they are auto-detected and may be omitted.
    """
    if enabled:
        jax.distributed.initialize(**kwargs)


def data_parallel_size(mesh: Mesh) -> int:
    """Devices a batch's leading dim is split over (the mesh axes the `batch` rule maps to)."""
    lead = batch_sharding(mesh, 1).spec[0]
    axes = () if lead is None else (lead,) if isinstance(lead, str) else tuple(lead)
    return math.prod(mesh.shape[a] for a in axes)


def check_batch_size(batch_size: int, mesh: Mesh, accum_steps: int = 1, what: str = "train.batch_size") -> None:
    """Every batch is split evenly over the data-parallel devices (and into `accum_steps` micro-batches)."""
    dp = data_parallel_size(mesh)
    if batch_size % dp:
        raise ConfigError(f"{what}={batch_size} is not divisible by the {dp} data-parallel devices of the mesh "
                         f"{dict(mesh.shape)}; use a multiple of {dp} (or another --config.mesh.strategy)")
    if batch_size % accum_steps:
        raise ConfigError(f"{what}={batch_size} is not divisible by optim.grad_accum_steps={accum_steps}")


def host(x) -> np.ndarray:
    """A device array's full value on this host. Batch-sharded arrays of a multi-process run span
    other hosts' devices, so they are all-gathered (every process gets the same numpy array);
    anything this process can already read (single process, replicated) is fetched directly."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
