"""Shared update: optax chain vs hand-written AdamW, schedules, non-finite skipping, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.train import (NonFiniteError, TrainState, check_nonfinite, default_optim_config,
                           make_optimizer, make_schedule, update)


def quad_loss(params, batch, *, frozen, config, rng):
    """sum_i (w x_i + b - y_i)^2 / n, with a frozen offset; NaN when the batch says so."""
    pred = batch["x"] @ params["w"] + params["b"] + frozen["offset"]
    err = jnp.square(pred - batch["y"])
    loss = err.sum() / err.size + jnp.where(batch["poison"], jnp.nan, 0.0)
    return loss, {"mse": loss}


def make(cfg, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    params = {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}
    return TrainState.create(params, make_optimizer(cfg), jax.random.PRNGKey(1), make_schedule(cfg))


def batch(seed, n=8, poison=False):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"x": jax.random.normal(k1, (n, 3)), "y": jax.random.normal(k2, (n, 2)),
            "poison": jnp.asarray(poison)}


FROZEN = {"offset": jnp.asarray(0.25)}


def test_schedules_analytic():
    c = default_optim_config()
    c.learning_rate, c.warmup_steps, c.total_steps = 1.0, 10, 110
    c.schedule = "cosine"
    s = make_schedule(c)
    np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.5, 1, 0.5, 0], atol=1e-6)
    c.schedule = "linear"
    s = make_schedule(c)
    np.testing.assert_allclose([s(35), s(110)], [0.75, 0], atol=1e-6)
    c.schedule = "constant"
    np.testing.assert_allclose(make_schedule(c)(500), 1.0)
    c.schedule = "exp"
    with pytest.raises(ValueError):
        make_schedule(c)


def test_update_matches_hand_written_adamw():
    c = default_optim_config()
    c.learning_rate, c.warmup_steps, c.total_steps, c.schedule = 0.1, 2, 10, "linear"
    c.weight_decay, c.grad_clip_norm, c.b1, c.b2, c.eps = 0.5, 0.3, 0.9, 0.95, 1e-8
    state = make(c)
    p = {k: np.asarray(v, np.float64) for k, v in state.params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t in range(1, 4):
        b = batch(t)
        g = jax.grad(lambda q: quad_loss(q, b, frozen=FROZEN, config=None, rng=None)[0])(
            {k: jnp.asarray(x, jnp.float32) for k, x in p.items()})
        g = {k: np.asarray(x, np.float64) for k, x in g.items()}
        norm = np.sqrt(sum((x ** 2).sum() for x in g.values()))
        g = {k: x * min(1.0, c.grad_clip_norm / norm) for k, x in g.items()}
        lr = 0.1 * (t - 1) / 2 if t - 1 < 2 else 0.1 * (1 - (t - 1 - 2) / 8)
        for k in p:
            m[k] = c.b1 * m[k] + (1 - c.b1) * g[k]
            v[k] = c.b2 * v[k] + (1 - c.b2) * g[k] ** 2
            step = (m[k] / (1 - c.b1 ** t)) / (np.sqrt(v[k] / (1 - c.b2 ** t)) + c.eps)
            decay = c.weight_decay * p[k] if p[k].ndim >= 2 else 0.0  # no decay on biases
            p[k] = p[k] - lr * (step + decay)
        state, metrics = update(state, b, quad_loss, FROZEN)
        np.testing.assert_allclose(float(metrics["optim/learning_rate"]), lr, rtol=1e-6)
        np.testing.assert_allclose(float(metrics["optim/grad_norm"]), norm, rtol=1e-5)
    for k in p:
        np.testing.assert_allclose(np.asarray(state.params[k]), p[k], rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3


def test_nonfinite_steps_are_skipped_and_counted():
    c = default_optim_config()
    c.learning_rate = 0.1
    state = make(c)
    state, _ = update(state, batch(0), quad_loss, FROZEN)
    good = jax.device_get((state.params, state.opt_state))
    for i in range(2):
        state, metrics = update(state, batch(1, poison=True), quad_loss, FROZEN)
        assert float(metrics["optim/step_skipped"]) == 1.0
        assert int(state.nonfinite_count) == i + 1
        jax.tree.map(np.testing.assert_array_equal, jax.device_get((state.params, state.opt_state)), good)
    check_nonfinite(state, max_consecutive=3)  # 2 < 3: no error yet
    state, _ = update(state, batch(1, poison=True), quad_loss, FROZEN)
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        check_nonfinite(state, max_consecutive=3)
    state, metrics = update(state, batch(2), quad_loss, FROZEN)  # a good step resets the count
    assert int(state.nonfinite_count) == 0 and float(metrics["optim/step_skipped"]) == 0.0
    assert np.all(np.isfinite(np.asarray(state.params["w"])))
    assert int(state.step) == 5


def test_grad_accumulation_equals_big_batch():
    c = default_optim_config()
    c.learning_rate, c.weight_decay, c.grad_clip_norm = 0.05, 0.1, 0.0
    big = make(c)
    c2 = default_optim_config()
    c2.update(c.to_dict())
    c2.grad_accum_steps = 2
    acc = make(c2)
    for s in range(3):
        b = batch(10 + s, n=8)
        halves = [jax.tree.map(lambda x: x[sl] if x.ndim else x, b) for sl in (slice(0, 4), slice(4, 8))]
        big, _ = update(big, b, quad_loss, FROZEN)
        acc, _ = update(acc, halves[0], quad_loss, FROZEN)
        if s == 0:  # half-way through an accumulation: params not yet updated
            np.testing.assert_array_equal(np.asarray(acc.params["w"]), np.asarray(make(c2).params["w"]))
        acc, _ = update(acc, halves[1], quad_loss, FROZEN)
    for k in ("w", "b"):
        np.testing.assert_allclose(np.asarray(acc.params[k]), np.asarray(big.params[k]), rtol=1e-5, atol=1e-6)


def test_rng_advances_and_is_deterministic():
    c = default_optim_config()
    seen = []

    def rng_loss(params, batch, *, frozen, config, rng):
        noise = jax.random.normal(rng, ())
        return jnp.sum(params["w"]) * noise, {"noise": noise}

    for _ in range(2):
        state = make(c)
        run = []
        for i in range(3):
            state, m = update(state, batch(i), rng_loss, FROZEN)
            run.append(float(m["noise"]))
        seen.append(run)
    assert seen[0] == seen[1] and len(set(seen[0])) == 3
