"""Every experiment file as a newcomer meets it: each `:smoke` variant runs as its docstring says, on a
fresh toy lab, needing nothing else; choice fields are refused at load; defaults do not depend on the cwd."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from rlhfjax.cli import main
from rlhfjax.config import load_config
from rlhfjax.errors import ConfigError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FILES = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))


def _runner(path):
    """How an experiment file's docstring runs it: ("rlhfjax", command) or ("script", scripts/x.py)."""
    with open(path) as f:
        text = f.read()
    name = re.escape(os.path.basename(path))
    found = re.search(r"rlhfjax (\w+) --config experiments/" + name, text)
    if found:
        return "rlhfjax", found.group(1)
    found = re.search(r"python (scripts/\w+\.py) --config experiments/" + name, text)
    assert found, f"{path}: the docstring should show its run command"
    return "script", found.group(1)


# Smoke variants another test already runs through the CLI (in process, or the installed console script), on a
# fresh toy lab, and checks more closely.
RUN_ELSEWHERE = {"toylab_iterate.py": "tests/test_iterate.py", "toylab_ppo.py": "tests/test_api.py",
                 "lm_tiny.py": "tests/test_cli.py"}
COMMAND_FILES = [p for p in FILES if _runner(p)[0] == "rlhfjax" and os.path.basename(p) not in RUN_ELSEWHERE]


def _command(path):
    return _runner(path)[1]


def test_smoke_variants_run_elsewhere_are_run_there():
    for name, test in RUN_ELSEWHERE.items():
        with open(os.path.join(ROOT, test)) as f:
            text = f.read()
        command = _command(os.path.join(ROOT, "experiments", name))
        through_cli = f'main(["{command}", "--config"' in text or f'[exe, "{command}", "--config"' in text
        assert name in text and through_cli and ":smoke" in text, (name, test)


def test_script_configs_name_an_existing_script():
    """Experiment files of a study script (e.g. kl_scaling_toy.py) name it; that script's own test runs
    their :smoke variant."""
    for path in FILES:
        kind, target = _runner(path)
        assert kind == "rlhfjax" or os.path.isfile(os.path.join(ROOT, target)), path


@pytest.fixture(scope="module")
def fresh_lab(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fresh") / "toylab")  # not built yet: the first run builds it


def test_every_default_variant_loads():
    for path in FILES:
        assert load_config(path).to_dict(), path


@pytest.mark.parametrize("path", COMMAND_FILES, ids=os.path.basename)
def test_every_smoke_variant_runs_on_a_fresh_toy_lab(path, fresh_lab, tmp_path, capsys):
    config = load_config(f"{path}:smoke")
    argv = [_command(path), "--config", f"{path}:smoke", "--workdir", str(tmp_path / "run")]
    if "data" in config and "toylab_dir" in config.data:
        argv.append(f"--config.data.toylab_dir={fresh_lab}")
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    assert os.path.exists(tmp_path / "run" / "config.json") and os.path.exists(tmp_path / "run" / "summary.json")


@pytest.mark.parametrize("field, value, choice", [
    ("rm.objective", "rankd", "ranked"), ("kl.controller", "adaptiv", "adaptive"),
    ("mesh.strategy", "fsdp2", "fsdp"), ("optim.schedule", "cos", "cosine"), ("kl.estimator", "k4", "k3")])
def test_choice_fields_are_refused_at_load_with_the_choices(field, value, choice):
    path = os.path.join(ROOT, "experiments", "toylab_rm.py" if field.startswith("rm.") else "toylab_ppo.py")
    with pytest.raises(ConfigError) as err:
        load_config(path, [f"--config.{field}={value}"])
    assert f"{field}={value!r}" in str(err.value) and choice in str(err.value)


def test_wrong_variant_and_unknown_pool_are_one_line_errors(fresh_lab, tmp_path, capsys):
    rm_file = os.path.join(ROOT, "experiments", "toylab_rm.py")
    assert main(["rm", "--config", f"{rm_file}:smok", "--workdir", str(tmp_path / "a")]) == 2
    assert "unknown config variant 'smok'; known: smoke" in capsys.readouterr().err
    assert main(["rm", "--config", f"{rm_file}:smoke", "--workdir", str(tmp_path / "b"),
                 f"--config.data.toylab_dir={fresh_lab}", "--config.data.data_dir=expert"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhfjax: error: data.data_dir='expert'") and "mixed" in err and "\n" not in err


def test_defaults_resolve_against_the_project_root_not_the_cwd(tmp_path, monkeypatch, shared_toylab):
    """From another directory, with no --workdir and default data paths, a run writes only under
    $RLHFJAX_HOME (the documented root): its run directory, and it reads the toy lab there (linked to the run's
    shared lab so that it is not built again: building one on first use is what the smoke runs above do)."""
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    (home / "runs" / "toylab").mkdir(parents=True)
    os.symlink(shared_toylab, home / "runs" / "toylab" / "data")
    exe = os.path.join(os.path.dirname(sys.executable), "rlhfjax")
    env = {**os.environ, "RLHFJAX_HOME": str(home)}
    proc = subprocess.run([exe, "sft", "--config", os.path.join(ROOT, "experiments", "toylab_sft.py:smoke"),
                           "--config.train.steps=0"],  # a run of no steps: it still reads the lab and exports
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.listdir(elsewhere) == []
    runs = sorted(os.listdir(home / "runs"))
    assert runs[0].startswith("sft-") and runs[1] == "toylab"
    assert json.loads((home / "runs" / runs[0] / "config.json").read_text())["data"]["toylab_dir"] == \
        str(home / "runs" / "toylab" / "data")
    # Without RLHFJAX_HOME the root is the project the experiment file belongs to.
    monkeypatch.delenv("RLHFJAX_HOME", raising=False)
    cfg = load_config(os.path.join(ROOT, "experiments", "toylab_sft.py"))
    assert cfg.data.toylab_dir == os.path.join(ROOT, "runs", "toylab", "data")
