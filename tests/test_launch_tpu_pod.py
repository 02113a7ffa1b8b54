"""scripts/launch_tpu_pod.sh: one gcloud call reaching every worker, whose remote command runs the rlhfjax
command in multi-process mode with exactly the arguments given (checked by running the remote command
against a stand-in `rlhfjax`)."""

import os
import stat
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "scripts", "launch_tpu_pod.sh")


def _executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _launch(tmp_path, *args, **env):
    """Run the script with a stand-in gcloud that records its argv; -> (returncode, argv list, stderr)."""
    record = tmp_path / "gcloud_argv"
    _executable(tmp_path / "bin" / "gcloud", f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > {record}\n')
    full_env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", **env}
    proc = subprocess.run(["bash", SCRIPT, *args], env=full_env, capture_output=True, text=True, timeout=60)
    argv = record.read_text().split("\0")[:-1] if record.exists() else []
    return proc.returncode, argv, proc.stderr


def test_every_worker_runs_the_command_with_its_arguments_intact(tmp_path):
    override = "--config.data.data_dir=/mnt/shared/hh data"  # a space must survive two shells
    code, argv, err = _launch(tmp_path, "my-v4-32", "ppo", "experiments/hh_ppo.py:pythia-1.4b,tpu-v4-32",
                              "/mnt/shared/runs/ppo", override, ZONE="us-central2-b", PROJECT="proj",
                              REPO_DIR="checkout")
    assert code == 0, err
    assert argv[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-v4-32"]
    assert "--zone=us-central2-b" in argv and "--worker=all" in argv and "--project=proj" in argv
    remote = next(a for a in argv if a.startswith("--command="))[len("--command="):]

    # What one worker does with it: a stand-in rlhfjax in the checkout prints the arguments it got.
    _executable(tmp_path / "worker" / "checkout" / ".venv" / "bin" / "rlhfjax",
                '#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    got = subprocess.run(["bash", "-c", remote], cwd=tmp_path / "worker", capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == ["ppo", "--config", "experiments/hh_ppo.py:pythia-1.4b,tpu-v4-32",
                                       "--workdir", "/mnt/shared/runs/ppo", "--config.distributed.mode=on", override]


def test_missing_zone_or_arguments_are_refused_before_calling_gcloud(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ZONE"}
    proc = subprocess.run(["bash", SCRIPT, "tpu", "sft", "cfg", "dir"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "ZONE" in proc.stderr
    code, argv, err = _launch(tmp_path, "tpu", "sft", ZONE="z")  # no config / workdir
    assert code == 2 and argv == [] and "launch_tpu_pod.sh TPU_NAME COMMAND CONFIG WORKDIR" in err
