"""Shared update: optax chain vs hand-written AdamW, schedules, non-finite skipping, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhfjax.train import (NonFiniteError, TrainState, check_nonfinite, default_optim_config,
                           make_optimizer, make_schedule, update)


def quad_loss(params, batch, *, frozen, config, rng):
    """(sum_i (w x_i + b - y_i)^2, n) with a frozen offset; NaN when the batch says so."""
    pred = batch["x"] @ params["w"] + params["b"] + frozen["offset"]
    err = jnp.square(pred - batch["y"])
    total = err.sum() + jnp.where(batch["poison"], jnp.nan, 0.0)
    return total, jnp.asarray(err.size, jnp.float32), {"mse": total / err.size}


def make(cfg, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    params = {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}
    return TrainState.create(params, make_optimizer(cfg), jax.random.PRNGKey(1), accum_steps=cfg.grad_accum_steps)


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
        g = jax.grad(lambda q: quad_loss(q, b, frozen=FROZEN, config=None, rng=None)[2]["mse"])(
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
    good = jax.device_get((state.params, state.opt_state.inner_state))
    for i in range(2):  # the loss is NaN, its gradient finite (the NaN term has no gradient path): still skipped
        state, metrics = update(state, batch(1, poison=True), quad_loss, FROZEN)
        assert float(metrics["optim/step_skipped"]) == 1.0
        assert int(state.nonfinite_count) == i + 1 == int(state.opt_state.total_notfinite)
        jax.tree.map(np.testing.assert_array_equal, jax.device_get((state.params, state.opt_state.inner_state)), good)
    check_nonfinite(state, max_consecutive=3)  # 2 < 3: no error yet
    state, _ = update(state, batch(1, poison=True), quad_loss, FROZEN)
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        check_nonfinite(state, max_consecutive=3)
    state, metrics = update(state, batch(2), quad_loss, FROZEN)  # a good step resets the count
    assert int(state.nonfinite_count) == 0 and float(metrics["optim/step_skipped"]) == 0.0
    assert np.all(np.isfinite(np.asarray(state.params["w"])))
    assert int(state.step) == 5


def token_loss(params, batch, *, frozen, config, rng):
    """Masked token loss sum_t m_t * (w . x_t)^2 over a ragged mask: a (sum, count) pair."""
    per_token = jnp.square(batch["x"] @ params["w"]).sum(-1)
    return jnp.sum(per_token * batch["m"]), jnp.sum(batch["m"]), {}


def ragged_batch():
    """Two rows interleaved as micro-batches of 1 and 4 real tokens (strided split: rows 0, 2 | 1, 3)."""
    x = jnp.arange(4 * 5 * 3, dtype=jnp.float32).reshape(4, 5, 3) / 10.0
    m = jnp.asarray([[1, 0, 0, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], jnp.float32)
    return {"x": x, "m": m}


def test_accumulation_weights_micro_batches_by_their_counts():
    """Micro-batches with 1 and 4 tokens: the gradient must be the full batch's (sum / 5), not the
    mean of the two micro-batch means (what averaging per-micro-batch losses would give)."""
    b = ragged_batch()
    params = {"w": jnp.asarray([[1.0, -0.5], [0.25, 0.5], [0.3, -0.2]])}

    def grads(k):
        from rlhfjax.train.update import weighted_grads
        loss, count, _, g = weighted_grads(params, b, None, jax.random.PRNGKey(0), token_loss, None, k)
        return float(loss), float(count), np.asarray(g["w"], np.float64)

    # numpy reference: d/dw of sum_t m_t (w . x_t)^2 / sum m = sum_t 2 m_t x_t (w . x_t)^T / sum m
    x, m, w = (np.asarray(a, np.float64) for a in (b["x"], b["m"], params["w"]))
    y = x @ w
    want_g = np.einsum("btd,bte->de", 2 * m[..., None] * x, y) / m.sum()
    want_loss = float((m * np.square(y).sum(-1)).sum() / m.sum())
    loss1, count1, g1 = grads(1)
    loss2, count2, g2 = grads(2)
    assert count1 == count2 == 5.0
    np.testing.assert_allclose(g1, want_g, rtol=1e-5)
    np.testing.assert_allclose(g2, want_g, rtol=1e-5)
    np.testing.assert_allclose([loss1, loss2], want_loss, rtol=1e-5)
    # The per-micro-batch-mean average differs: this test can tell the two apart.
    rows = [np.asarray([0, 2]), np.asarray([1, 3])]
    naive = np.mean([np.einsum("btd,bte->de", 2 * m[r, :, None] * x[r], y[r]) / m[r].sum() for r in rows], 0)
    assert np.abs(naive - want_g).max() > 1e-2


def test_accumulated_update_equals_full_batch_update():
    c = default_optim_config()
    c.learning_rate, c.weight_decay, c.grad_clip_norm = 0.05, 0.1, 0.5
    big = TrainState.create({"w": jnp.ones((3, 2))}, make_optimizer(c), jax.random.PRNGKey(1))
    acc = TrainState.create({"w": jnp.ones((3, 2))}, make_optimizer(c), jax.random.PRNGKey(1), accum_steps=2)
    for _ in range(3):
        big, mb = update(big, ragged_batch(), token_loss)
        acc, ma = update(acc, ragged_batch(), token_loss)
        np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(ma["optim/grad_norm"]), float(mb["optim/grad_norm"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc.params["w"]), np.asarray(big.params["w"]), rtol=1e-5, atol=1e-6)
    assert int(acc.step) == 3


def test_schedule_counts_optimizer_steps_under_accumulation():
    """Linear decay over total_steps=8 optimizer steps with 4 micro-batches each: the 8th update
    runs at 1/8 of the peak and the LR after it is 0 (it used to stop at 0.75x the peak)."""
    c = default_optim_config()
    c.learning_rate, c.schedule, c.total_steps, c.grad_accum_steps = 1.0, "linear", 8, 4
    state = make(c)
    lrs = []
    for s in range(8):
        state, m = update(state, batch(s, n=8), quad_loss, FROZEN)
        lrs.append(float(m["optim/learning_rate"]))
    np.testing.assert_allclose(lrs, [1 - i / 8 for i in range(8)], atol=1e-6)
    assert float(make_schedule(c)(8)) == 0.0 and int(state.step) == 8


def test_rng_advances_and_is_deterministic():
    c = default_optim_config()
    seen = []

    def rng_loss(params, batch, *, frozen, config, rng):
        noise = jax.random.normal(rng, ())
        return jnp.sum(params["w"]) * noise, 1.0, {"noise": noise}

    for _ in range(2):
        state = make(c)
        run = []
        for i in range(3):
            state, m = update(state, batch(i), rng_loss, FROZEN)
            run.append(float(m["noise"]))
        seen.append(run)
    assert seen[0] == seen[1] and len(set(seen[0])) == 3


@pytest.mark.parametrize("shuffle", [False, True])
def test_minibatch_update_equals_its_steps_one_by_one(shuffle):
    """epochs x minibatches in one jit = the same minibatches through `update` in a Python loop: in row order
    without shuffling (SuperHF), by the per-epoch permutations `minibatch_indices` draws with it (PPO, GRPO)."""
    from rlhfjax.train.update import minibatch_indices, minibatch_update

    cfg = default_optim_config()
    cfg.learning_rate = 0.1
    data = {k: v for k, v in batch(3, n=8).items() if k != "poison"}
    poison = {"poison": jnp.asarray(False)}
    rng = jax.random.PRNGKey(7)
    scanned, metrics = minibatch_update(make(cfg), {**data}, FROZEN, rng, loss_fn=_loss_no_poison, config=None,
                                        epochs=2, num_minibatches=4, shuffle=shuffle)
    idx = np.asarray(minibatch_indices(rng, 8, 2, 4, shuffle))
    if not shuffle:
        np.testing.assert_array_equal(idx, np.tile(np.arange(8).reshape(4, 2), (2, 1)))
    state = make(cfg)
    for rows in idx:
        state, m = update(state, {**jax.tree.map(lambda x: x[rows], data), **poison}, quad_loss, FROZEN)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), scanned.params, state.params)
    assert metrics["loss"].shape == (8,) and int(scanned.step) == 8


def _loss_no_poison(params, batch, *, frozen, config, rng):
    return quad_loss(params, {**batch, "poison": jnp.asarray(False)}, frozen=frozen, config=config, rng=rng)
