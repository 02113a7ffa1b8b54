"""One live run per run directory: a second run is refused in one line naming the holder, a lock left by a dead
run on this host is taken over, one from another host is not; the CLI and the notebook API take it; SIGTERM
is the CLI's exit 75 with the lock released."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from rlhfjax import api, run_lock
from rlhfjax.cli import main
from rlhfjax.errors import PREEMPTED_EXIT, Preempted

ROOT = os.path.join(os.path.dirname(__file__), "..")
LM_SMOKE = os.path.join(ROOT, "experiments", "lm_tiny.py:smoke")
HOLDER = ("import sys, time\nfrom rlhfjax import run_lock\nrun_lock.acquire(sys.argv[1], 'ppo')\n"
          "print('locked', flush=True)\ntime.sleep(600)\n")


def _holder(workdir):
    """Another process holding `workdir`'s lock (as a live run would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    workdir = tmp_path / "run"
    proc = _holder(workdir)
    try:
        (workdir / "config.json").write_text('{"mine": 1}')
        assert main(["lm", "--config", LM_SMOKE, "--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("rlhfjax: error: ") and "in use by another run" in err
        assert f"pid {proc.pid}" in err and socket.gethostname() in err and "ppo" in err
        assert json.loads((workdir / "config.json").read_text()) == {"mine": 1}  # the live run's files untouched
        cfg = api.config(LM_SMOKE)
        with pytest.raises(run_lock.RunLockedError, match=f"pid {proc.pid}"):  # notebooks respect it too
            api.Run("lm", cfg, str(workdir)).train()
    finally:
        proc.kill()  # kill -9: the holder never releases; its file stays, naming a dead pid
        proc.wait()
    assert json.loads((workdir / run_lock.LOCK_FILE).read_text())["pid"] == proc.pid
    fd = run_lock.acquire(str(workdir), "lm")
    assert f"taking over the lock of {workdir} from a run that is gone" in capsys.readouterr().err
    assert json.loads((workdir / run_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(run_lock.RunLockedError):  # even from this process: one live run per directory
        run_lock.acquire(str(workdir))
    run_lock.release(str(workdir), fd)
    assert not (workdir / run_lock.LOCK_FILE).exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / run_lock.LOCK_FILE).write_text(json.dumps(
        {"host": "tpu-vm-elsewhere", "pid": 4242, "started": "2026-12-01 10:00:00 UTC", "command": "ppo"}))
    with pytest.raises(run_lock.RunLockedError, match="another machine.*tpu-vm-elsewhere.*pid 4242") as e:
        run_lock.acquire(str(workdir))
    assert f"delete {workdir / run_lock.LOCK_FILE}" in str(e.value)


def test_preemption_is_exit_75_and_releases_the_lock(tmp_path, monkeypatch, capsys):
    """The CLI's side of a SIGTERM: `Preempted` from the loop (tests/test_checkpoint.py sends the real signal)
    ends the command with one line and status 75, and the run directory is free again."""
    from rlhfjax import commands

    workdir = tmp_path / "run"
    seen = []

    class Preempting:
        def run(self, config, wd):
            seen.append(json.loads((workdir / run_lock.LOCK_FILE).read_text())["pid"])
            raise Preempted(7, signal.Signals.SIGTERM.name)

    monkeypatch.setattr(commands, "get", lambda name: Preempting())
    t0 = time.time()
    assert main(["lm", "--config", LM_SMOKE, "--workdir", str(workdir)]) == PREEMPTED_EXIT == 75
    assert seen == [os.getpid()] and time.time() - t0 < 60
    err = capsys.readouterr().err.strip()
    assert err == "rlhfjax: stopped by SIGTERM after step 7: checkpointed there; the same command resumes"
    assert not (workdir / run_lock.LOCK_FILE).exists()
