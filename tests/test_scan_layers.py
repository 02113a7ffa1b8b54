"""Scanned layers (`ModelConfig.scan_layers`) and per-block remat (`remat_policy`): the same function as the
per-layer model, exact layout conversions, the same gradients under every remat policy, and stacked params
sharded by the same rules. (HF parity and the sampler run in both layouts in their own test files.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as PS

from helpers_runtime import lm_logits, tiny_cfg
from rlhfjax import parallel
from rlhfjax.errors import ConfigError
from rlhfjax.models import api, init_params, stack_layers, unstack_layers
from rlhfjax.models.config import REMAT_POLICIES

CFG = tiny_cfg("llama", num_layers=3)
TOKENS = jax.random.randint(jax.random.PRNGKey(1), (4, 9), 1, CFG.vocab_size)
MASK = jnp.ones_like(TOKENS).at[1, :3].set(0)


def _loss(params, cfg):
    logp = jax.nn.log_softmax(lm_logits(params, cfg, TOKENS, MASK)[:, :-1], -1)
    return -jnp.mean(jnp.take_along_axis(logp, TOKENS[:, 1:, None], -1))


def test_layout_conversions_are_exact_and_init_has_the_stacked_layout():
    params = init_params(CFG, jax.random.PRNGKey(0))
    stacked = stack_layers(params, CFG.num_layers)
    assert stacked["layers"]["attn"]["q"]["kernel"].shape == (3, *params["layer_0"]["attn"]["q"]["kernel"].shape)
    back = unstack_layers(stacked, CFG.num_layers)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    scanned = CFG.replace(scan_layers=True)
    fresh = init_params(scanned, jax.random.PRNGKey(0))
    assert jax.tree.structure(fresh) == jax.tree.structure(stacked)
    # A scalar model's backbone is converted where its layers are.
    nested = stack_layers({"backbone": params, "head": {"kernel": np.ones((32, 1))}}, CFG.num_layers)
    assert "layers" in nested["backbone"] and "head" in nested


@pytest.mark.parametrize("policy", REMAT_POLICIES)
def test_every_remat_policy_gives_the_per_layer_models_loss_and_gradients(policy):
    """Rematerialisation changes what is stored, not what is computed: loss equal to float32 rounding
    (1e-6) and gradients to 1e-5 relative, scanned or not."""
    params = init_params(CFG, jax.random.PRNGKey(0))
    want_loss, want_grad = jax.value_and_grad(_loss)(params, CFG)
    for scanned in (False, True):
        cfg = CFG.replace(scan_layers=scanned, remat_policy=policy)
        p = stack_layers(params, CFG.num_layers) if scanned else params
        loss, grad = jax.jit(jax.value_and_grad(_loss), static_argnums=1)(p, cfg)
        grad = unstack_layers(grad, CFG.num_layers) if scanned else grad
        assert abs(float(loss) - float(want_loss)) <= 1e-6
        for g, w in zip(jax.tree.leaves(grad), jax.tree.leaves(want_grad)):
            assert float(jnp.max(jnp.abs(g - w))) <= 1e-5 * max(float(jnp.max(jnp.abs(w))), 1e-6)


def test_activations_read_every_block_in_either_layout():
    params = init_params(CFG, jax.random.PRNGKey(0))
    want = api.activations(params, CFG, TOKENS, MASK, [0, 2, api.FINAL_NORM])
    got = api.activations(stack_layers(params, 3), CFG.replace(scan_layers=True), TOKENS, MASK,
                          [0, 2, api.FINAL_NORM])
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), atol=1e-6)


def test_stacked_params_shard_like_per_layer_ones_under_fsdp():
    cfg = CFG.replace(scan_layers=True, remat_policy="dots_saveable")
    mesh_config = parallel.default_mesh_config()
    mesh_config.strategy = "fsdp"
    mesh = parallel.make_mesh(mesh_config)
    shardings = api.param_shardings(cfg, mesh, "lm")
    q = shardings["layers"]["attn"]["q"]["kernel"]
    assert q.spec == PS(None, "fsdp", None)  # the layer axis stays whole; embed is split as before
    params = api.place(stack_layers(init_params(CFG, jax.random.PRNGKey(0)), 3), shardings)
    x = params["layers"]["attn"]["q"]["kernel"]
    assert x.addressable_shards[0].data.size * 8 == x.size


def test_an_unknown_remat_policy_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="dots_saveable"):
        CFG.replace(remat_policy="dots")
