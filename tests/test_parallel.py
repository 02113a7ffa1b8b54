"""Sharding: DP/FSDP/TP meshes give single-device results; params are sharded as the rules say."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as PS

from helpers_runtime import VOCAB, left_padded, lm_logits, nll_loss, tiny_cfg
from rlhfjax import parallel
from rlhfjax.models import Transformer, init_params
from rlhfjax.sampling import SamplingConfig, sample
from rlhfjax.train import TrainState, default_optim_config, make_optimizer, update


def mesh_for(strategy, **sizes):
    c = parallel.default_mesh_config()
    c.strategy = strategy
    c.update(sizes)
    return parallel.make_mesh(c)


def test_mesh_shapes_from_config():
    c = parallel.default_mesh_config()
    for strat, axis in [("dp", "data"), ("fsdp", "fsdp"), ("tp", "tensor")]:
        c.strategy = strat
        assert parallel.mesh_shape(c, 8)[axis] == 8
    c.strategy, c.data, c.fsdp, c.tensor = "custom", 2, -1, 2
    assert parallel.mesh_shape(c, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    c.data = 3
    with pytest.raises(ValueError):
        parallel.mesh_shape(c, 8)
    c.strategy = "zero3"
    with pytest.raises(ValueError):
        parallel.mesh_shape(c, 8)


def test_logical_to_spec_rules():
    mesh = mesh_for("custom", data=2, fsdp=2, tensor=2)
    assert parallel.logical_to_spec(("embed", "mlp"), (32, 64), mesh) == PS("fsdp", "tensor")
    assert parallel.logical_to_spec(("batch", "length", "embed"), (8, 4, 32), mesh) == \
        PS(("data", "fsdp"), None, None)  # fsdp already used by batch -> embed unsharded
    assert parallel.logical_to_spec(("vocab", "embed"), (51, 32), mesh) == PS(None, "fsdp")  # 51 % 2


CFG = tiny_cfg("llama", vocab_size=VOCAB, num_layers=1)  # 1 layer: SPMD compiles dominate
OPT = default_optim_config()
OPT.learning_rate, OPT.weight_decay, OPT.eps = 1e-3, 0.1, 1e-6
TX = make_optimizer(OPT)
EVERY_DEVICE = True  # conftest: the default data-parallel mesh keeps all 8 devices here
RNG = jax.random.PRNGKey(0)
BATCH = {"tokens": jax.random.randint(jax.random.PRNGKey(1), (8, 12), 1, VOCAB),
         "mask": jnp.ones((8, 12), jnp.int32).at[:3, :4].set(0)}


def _init(rng):
    t = jnp.zeros((1, 1), jnp.int32)
    return Transformer(CFG).init(rng, t, t, t)["params"]


def _run(mesh):
    """Sharded params -> forward logits, loss+update, greedy+sampled rollouts, all on `mesh`."""
    params, shards = parallel.init_sharded(_init, RNG, mesh)
    state = TrainState.create(jax.tree.map(jnp.copy, params), TX, jax.random.PRNGKey(7))
    state = state.replace(opt_state=parallel.shard_like(
        state.opt_state, parallel.opt_state_shardings(TX, params, shards, mesh)))
    batch = parallel.shard_batch(BATCH, mesh)
    with parallel.activate(mesh):
        logits = jax.jit(lambda p, b: lm_logits(p, CFG, b["tokens"], b["mask"]))(params, batch)
        toks, mask = left_padded([[3, 4, 5], [9], [1, 2, 3, 4, 5, 6], [7, 7]] * 2, 6)
        toks, mask = parallel.shard_batch((toks, mask), mesh)
        roll = sample(params, toks, mask, jax.random.PRNGKey(3), model_cfg=CFG,
                      cfg=SamplingConfig(max_new_tokens=5, temperature=1.0, top_k=10))
        new_state, metrics = update(state, batch, nll_loss, None, CFG)
    return params, shards, logits, roll, new_state, metrics


def _sharded_as(x, spec, mesh):
    return x.sharding.is_equivalent_to(NamedSharding(mesh, spec), x.ndim)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@pytest.fixture(scope="module")
def single():
    return _run(parallel.single_device_mesh())


EXPECTED_Q_KERNEL = {"dp": PS(None, None), "fsdp": PS("fsdp", None), "tp": PS(None, "tensor")}
EXPECTED_EMBED = {"dp": PS(None, None), "fsdp": PS(None, "fsdp"), "tp": PS("tensor", None)}


@pytest.mark.parametrize("strategy", ["dp", "fsdp", "tp"])
def test_strategy_matches_single_device(single, strategy):
    mesh = mesh_for(strategy)
    params, shards, logits, roll, state, metrics = _run(mesh)
    p1, _, logits1, roll1, state1, metrics1 = single

    # Params are really sharded as the rules say (spec and per-device shard shapes).
    q = params["layer_0"]["attn"]["q"]["kernel"]
    assert _sharded_as(q, EXPECTED_Q_KERNEL[strategy], mesh)
    assert _sharded_as(params["embed"]["embedding"], EXPECTED_EMBED[strategy], mesh)
    n_shards = 1 if strategy == "dp" else 8
    assert q.addressable_shards[0].data.size == q.size // n_shards
    down = params["layer_0"]["mlp"]["down"]["kernel"]  # ("mlp", "embed")
    assert down.addressable_shards[0].data.size == down.size // n_shards
    # Optimizer moments follow their params; updated params keep their sharding.
    mu = optax.tree_utils.tree_get(state.opt_state, "mu")["layer_0"]["attn"]["q"]["kernel"]
    assert _sharded_as(mu, EXPECTED_Q_KERNEL[strategy], mesh)
    assert _sharded_as(state.params["layer_0"]["attn"]["q"]["kernel"], EXPECTED_Q_KERNEL[strategy], mesh)

    # Same init as the unsharded initialiser, same forward, loss, update and rollouts.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
                 params, init_params(CFG, RNG))
    assert _rel(logits, logits1) <= 1e-5
    assert _rel(metrics["loss"], metrics1["loss"]) <= 1e-5
    assert _rel(metrics["optim/grad_norm"], metrics1["optim/grad_norm"]) <= 1e-5
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state1.params)):
        assert _rel(a, b) <= 1e-5
    for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(state1.opt_state)):
        assert _rel(a, b) <= 1e-5
    np.testing.assert_array_equal(np.asarray(roll.tokens_BxN), np.asarray(roll1.tokens_BxN))
    assert _rel(roll.policy_logp_BxN, roll1.policy_logp_BxN) <= 1e-5


def _bytes_on(tree, device) -> int:
    """Bytes of `tree`'s non-scalar arrays held by one device, from their shardings (scalars: the optimizer's
    replicated counters and injected learning rate)."""
    return sum(s.data.nbytes for x in jax.tree.leaves(tree) if x.ndim for s in x.addressable_shards
               if s.device == device)


def _total_bytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree) if x.ndim)


@pytest.mark.parametrize("strategy", ["fsdp", "tp"])
def test_params_and_optimizer_state_bytes_per_device_shrink_with_the_mesh(strategy):
    """FSDP: every parameter (on its `embed` axis) and its Adam moments are split 8 ways, so a device holds
    1/8 of the params and of the optimizer state (its replicated scalars aside). TP: attention heads
    (q, k, v, o), the MLP (gate, up, down) and the vocabulary are split over `tensor`; only the norm scales
    stay whole (here 7.6x less per device)."""
    mesh = mesh_for(strategy)
    params, shards = parallel.init_sharded(_init, RNG, mesh)
    opt_state = jax.jit(TX.init, out_shardings=parallel.opt_state_shardings(TX, params, shards, mesh))(params)
    device = mesh.devices.flat[0]
    for tree in (params, opt_state):
        assert _total_bytes(tree) / _bytes_on(tree, device) > (7.99 if strategy == "fsdp" else 7.5)
    large = [x for x in jax.tree.leaves(params) if x.ndim >= 2]
    if strategy == "fsdp":
        assert all(_bytes_on(x, device) * 8 == x.nbytes for x in large)
    else:
        layer = params["layer_0"]
        for x in [*(layer["attn"][n]["kernel"] for n in ("q", "k", "v", "o")),
                  *(layer["mlp"][n]["kernel"] for n in ("gate", "up", "down"))]:
            assert "tensor" in x.sharding.spec and _bytes_on(x, device) * 8 == x.nbytes
