"""scripts/_venv.sh (sourced by test.sh and demo.sh): an explicit PYTHON that differs from .venv's is refused.

Each test copies _venv.sh into a throwaway project with a stand-in .venv, so a failure can never rebuild
or reinstall the real one.
"""

import os
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
REAL = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _exe(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return path


def _fake_python(path, version):
    # Answers _venv.sh's major.minor query with `version`; everything else runs the real interpreter.
    return _exe(path, f'#!/bin/bash\ncase "$*" in *"version_info[:2]"*) echo {version}; exit 0;; esac\n'
                      f'exec "{sys.executable}" "$@"\n')


def _project(tmp_path, venv_version):
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "_venv.sh"), proj / "scripts")
    (proj / "pyproject.toml").write_text("")
    bin_ = proj / ".venv" / "bin"
    bin_.mkdir(parents=True)
    _fake_python(bin_ / "python", venv_version)
    (bin_ / "activate").write_text("export VENV_ACTIVATED=yes\n")
    stamp = proj / ".venv" / ".rlhfjax-installed"
    stamp.write_text("")
    os.utime(proj / "pyproject.toml", (1e9, 1e9))  # older than the stamp: no install runs
    return proj


def _snapshot(venv):
    return {str(p): (p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(venv.rglob("*"))}


def _source(proj, python=None, path_dir=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    if python is not None:
        env["PYTHON"] = str(python)
    if path_dir is not None:
        env["PATH"] = f"{path_dir}:{env['PATH']}"
    return subprocess.run(["bash", "-c", "source scripts/_venv.sh && echo activated=$VENV_ACTIVATED"],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=60)


def test_python_other_than_the_venvs_is_refused_and_venv_untouched(tmp_path):
    proj = _project(tmp_path, REAL)
    other = _fake_python(tmp_path / "python3.99", "3.99")
    before = _snapshot(proj / ".venv")
    r = _source(proj, python=other)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0] == (f"rlhfjax: .venv uses Python {REAL} but PYTHON={other} is 3.99: delete .venv "
                        f"(rm -rf .venv) to rebuild it with {other}, or drop PYTHON= to keep it")
    assert "activated" not in r.stdout
    assert _snapshot(proj / ".venv") == before


def test_python_matching_the_venv_passes(tmp_path):
    proj = _project(tmp_path, REAL)
    before = _snapshot(proj / ".venv")
    r = _source(proj, python=sys.executable)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "activated=yes" and r.stderr == ""
    assert _snapshot(proj / ".venv") == before


def test_without_python_the_existing_venv_is_kept(tmp_path):
    # Only an explicit PYTHON is compared: plain python3 on PATH may differ from the .venv it built.
    proj = _project(tmp_path, "3.99")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_python(bindir / "python3", REAL)
    r = _source(proj, path_dir=bindir)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "activated=yes"
