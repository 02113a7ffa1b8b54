"""A real multi-controller run: two processes on this machine (CPU, gloo collectives, 2 devices each) train
SFT for 5 steps and then PPO for 2 iterations from the SFT export, under an FSDP mesh over the 4 global
devices, through the CLI. The same commands in one process over 4 devices are the reference.

The two-process run is killed (every process ends abruptly right after logging step 3, one step past the
step-2 checkpoint) and restarted; it must resume and continue exactly.

Tolerance against one process: the two runs do the same arithmetic except for the order of the
cross-device reductions (gloo between processes vs in-process), so they agree to float32 rounding:
metrics to 1e-5 relative or 1e-5 absolute (a KL is a small difference of log-probs near -5, so its
rounding error is absolute: ~1e-7 on KL, ~2e-6 on √KL), final params to 1e-5 absolute. The resumed
step must equal the killed run's own record of it exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import TEST_XLA_OPTIONS

from rlhfjax.models.hf import load_pretrained
from rlhfjax.train.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "helpers_multiprocess.py")
SFT = os.path.join(ROOT, "experiments", "toylab_sft.py:smoke")
PPO = os.path.join(ROOT, "experiments", "toylab_ppo.py:smoke")
UNTIMED = ("time/", "perf/")  # wall-clock metrics differ between any two runs
RTOL, ATOL, PARAM_ATOL = 1e-5, 1e-5, 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(commands, num_processes: int, devices: int, logs: str, die_after_step=None) -> list[int]:
    """Start every process, wait for all; -> exit codes (stdout+stderr of process i in `logs`.i)."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {TEST_XLA_OPTIONS}",
           "JAX_PLATFORMS": "cpu"}
    procs = []
    for pid in range(num_processes):
        spec = {"commands": commands, "port": port, "num_processes": num_processes, "process_id": pid,
                "die_after_step": die_after_step}
        with open(f"{logs}.{pid}", "w") as out:
            procs.append(subprocess.Popen([sys.executable, DRIVER, json.dumps(spec)], env=env, cwd=ROOT,
                                          stdout=out, stderr=subprocess.STDOUT))
    codes, t0 = [], time.perf_counter()
    for p in procs:
        try:
            codes.append(p.wait(timeout=400))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    print(f"{logs}: {num_processes} process(es), {time.perf_counter() - t0:.1f} s")
    return codes


def _log(logs: str, pid: int) -> str:
    with open(f"{logs}.{pid}") as f:
        return f.read()


def _commands(lab: str, workdir: str) -> list[list[str]]:
    common = [f"--config.data.toylab_dir={lab}", "--config.mesh.strategy=fsdp"]
    return [["sft", SFT, os.path.join(workdir, "sft"), *common, "--config.train.steps=5",
             "--config.train.save_every=2", "--config.train.eval_every=0"],
            ["ppo", PPO, os.path.join(workdir, "ppo"), *common, "--config.train.iterations=2",
             "--config.train.save_every=1", f"--config.policy.init_from={os.path.join(workdir, 'sft', 'model')}",
             # fewer programs to compile (the value on the policy's trunk, one minibatch): CI time
             "--config.value.model=policy_head", "--config.ppo.epochs=1", "--config.ppo.num_minibatches=1"]]


def _timed_free(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(UNTIMED)}


def _assert_same_records(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        g, w = _timed_free(g), _timed_free(w)
        assert g.keys() == w.keys(), (sorted(g), sorted(w))
        keys = sorted(g)
        np.testing.assert_allclose([g[k] for k in keys], [w[k] for k in keys], rtol=RTOL, atol=ATOL,
                                   err_msg=f"step {g['step']}: {keys}")


def _assert_same_params(got_dir: str, want_dir: str) -> None:
    (_, got), (_, want) = load_pretrained(got_dir), load_pretrained(want_dir)
    diffs = [float(np.max(np.abs(np.asarray(g) - np.asarray(w)))) for g, w in
             zip(jax.tree.leaves(got), jax.tree.leaves(want))]
    assert max(diffs) <= PARAM_ATOL, max(diffs)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_a_kill(tmp_path, toylab_data):
    lab = toylab_data
    ref, multi = str(tmp_path / "one"), str(tmp_path / "two")

    assert _launch(_commands(lab, ref), 1, 4, str(tmp_path / "one.log")) == [0]

    # Killed: both processes end right after logging step 3 of SFT (checkpointed at step 2).
    assert _launch(_commands(lab, multi), 2, 2, str(tmp_path / "killed.log"), die_after_step=3) == [17, 17]
    killed = read_jsonl(os.path.join(multi, "sft", "metrics.jsonl"))
    assert [r["step"] for r in killed] == [1, 2, 3]
    assert not os.path.exists(os.path.join(multi, "ppo"))
    shutil.copy(os.path.join(multi, "sft", "metrics.jsonl"), tmp_path / "killed_metrics.jsonl")

    # Restarted: resumes at the step-2 checkpoint, redoes step 3 exactly, finishes SFT, then runs PPO.
    assert _launch(_commands(lab, multi), 2, 2, str(tmp_path / "resumed.log")) == [0, 0]
    for pid in range(2):
        log = _log(str(tmp_path / "resumed.log"), pid)
        assert "process %d of 2: 2 local devices, 4 in all" % pid in log
        assert "resumed from the checkpoint at step 2" in log
    sft = read_jsonl(os.path.join(multi, "sft", "metrics.jsonl"))
    assert _timed_free(sft[2]) == _timed_free(killed[2])  # step 3 again, bit for bit

    for stage in ("sft", "ppo"):
        _assert_same_records(read_jsonl(os.path.join(multi, stage, "metrics.jsonl")),
                             read_jsonl(os.path.join(ref, stage, "metrics.jsonl")))
        _assert_same_params(os.path.join(multi, stage, "model"), os.path.join(ref, stage, "model"))
    # Process 0 alone wrote the files: each eval's samples once, as in the one-process run.
    for stage in ("sft", "ppo"):
        got, want = (read_jsonl(os.path.join(d, stage, "samples.jsonl")) for d in (multi, ref))
        assert [r["step"] for r in got] == [r["step"] for r in want]
        assert [r.get("completion", r.get("response")) for r in got] == \
            [r.get("completion", r.get("response")) for r in want]


def test_distributed_settings_come_from_config_then_environment(monkeypatch):
    from rlhfjax import distributed
    from rlhfjax.errors import ConfigError

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    c = distributed.default_config()
    assert distributed._resolved(c) == {"initialization_timeout": 300}
    assert distributed.initialize(c) is False  # auto without a coordinator: one process, nothing joined
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "head:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed._resolved(c) == {"coordinator_address": "head:1234", "num_processes": 4, "process_id": 3,
                                        "initialization_timeout": 300}
    c.coordinator_address, c.process_id, c.local_device_ids = "other:1", 0, "0,1"  # the config wins
    assert distributed._resolved(c) == {"coordinator_address": "other:1", "num_processes": 4, "process_id": 0,
                                        "local_device_ids": [0, 1], "initialization_timeout": 300}
    c.mode = "off"
    assert distributed.initialize(c) is False
    c.mode = "sometimes"
    with pytest.raises(ConfigError, match="distributed.mode"):
        distributed.initialize(c)
