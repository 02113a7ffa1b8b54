"""scripts/bench_ppo.py's utilisation helpers: `compiled_stats` against analytic FLOPs, and the loop behaviour of
XLA's cost analysis that the benchmarks' trip-count scaling relies on."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ppo_script", os.path.join(ROOT, "scripts", "bench_ppo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matmul_flops_are_2mkn_and_memory_covers_the_buffers(bench):
    m, k, n = 24, 40, 56
    a, b = jnp.ones((m, k)), jnp.ones((k, n))
    st = bench.compiled_stats(jax.jit(lambda x, y: x @ y), a, b)
    assert st["flops"] == 2 * m * k * n
    if st["peak_memory_bytes"] is not None:  # None: no memory analysis on this backend
        assert st["peak_memory_bytes"] >= 4 * (m * k + k * n + m * n)


def test_paired_ratio_divides_each_update_by_the_matmuls_beside_it(bench):
    """Iteration i's update FLOP/s over the FLOP/s of the median of the matmul timings around it, in %."""
    n = bench.MATMUL_N
    flops, update_s = 6e9, [2.0, 3.0]
    beside = [[0.5, 0.7, 0.6, 0.9], [0.4, 0.4, 0.8, 0.4]]  # medians 0.65 and 0.4 s
    got = bench._paired_update_ratio(flops, update_s, beside)["update_pct_paired"]
    want = [100 * (6e9 / 2.0) * 0.65 / (2 * n ** 3), 100 * (6e9 / 3.0) * 0.4 / (2 * n ** 3)]
    assert got == pytest.approx(want, rel=1e-12)


def test_loop_body_is_counted_once(bench):
    """If XLA starts multiplying by the trip count, the benchmarks' scaling would double-count: fix them."""
    m, trips = 32, 6
    a = jnp.ones((m, m))
    looped = jax.jit(lambda x: jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=trips)[0])
    st = bench.compiled_stats(looped, a)
    assert st["flops"] < 2 * 2 * m ** 3  # one matmul (+ the loop counter), not `trips`
    assert bench.scaled(st, trips)["flops"] >= trips * 2 * m ** 3


def test_chunked_phase_scaled_by_chunks_matches_unchunked(bench):
    """The teacher-forced phases run as a lax.map over chunks: XLA's count × chunks = the one-shot count."""
    from rlhfjax.models import init_params, preset
    from rlhfjax.harness import experience

    cfg = preset("llama", vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                 intermediate_size=64, max_position_embeddings=32)
    params = init_params(cfg, jax.random.PRNGKey(0))
    seq = jax.random.randint(jax.random.PRNGKey(1), (8, 12), 1, cfg.vocab_size)
    kw = dict(model_cfg=cfg, num_response=4, temperature=1.0)
    whole = bench.compiled_stats(experience.logp_phase, params, seq, jnp.ones_like(seq), **kw)
    chunked = bench.compiled_stats(experience.logp_phase, params, seq, jnp.ones_like(seq), chunk_size=2, **kw)
    assert bench.scaled(chunked, 4)["flops"] == pytest.approx(whole["flops"], rel=0.02)
    assert chunked["flops"] < 0.5 * whole["flops"]


def test_profile_update_sums_op_kinds_and_measures_concurrency():
    """scripts/profile_update.py's reading of a trace: time per op kind (XLA's numeric suffix dropped) and the
    share of the span with 0, 1 or 2 ops running, checked on hand-made events."""
    spec = importlib.util.spec_from_file_location("profile_update_script",
                                                  os.path.join(ROOT, "scripts", "profile_update.py"))
    prof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prof)
    ops = [{"name": "ynn_fusion.3", "ts": 0, "dur": 10}, {"name": "ynn_fusion", "ts": 5, "dur": 10},
           {"name": "copy_bitcast_fusion.12", "ts": 20, "dur": 5}]
    assert prof.op_kinds(ops) == {"ynn_fusion": 20, "copy_bitcast_fusion": 5}
    # span 0..25: two ops over [5, 10), none over [15, 20), one otherwise
    assert prof.concurrency(ops) == pytest.approx({0: 0.2, 1: 0.6, 2: 0.2})


def test_profile_update_runs_end_to_end_at_the_toy_shape(capsys, tmp_path):
    """The script itself (bench_ppo.build → bench_update_parts.one_minibatch → a traced step → the table), so a
    change to the builders' arguments cannot leave it broken unnoticed."""
    import re

    spec = importlib.util.spec_from_file_location("profile_update_e2e",
                                                  os.path.join(ROOT, "scripts", "profile_update.py"))
    prof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prof)
    assert prof.main(["--shape", "toy", "--batch", "4", "--prompt-len", "8", "--response-len", "8", "--steps", "1",
                      "--trace-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    op_ms = float(re.search(r"op time on the worker threads ([\d.]+) ms per step", out).group(1))
    assert op_ms > 0 and "| op kind | ms per step |" in out
