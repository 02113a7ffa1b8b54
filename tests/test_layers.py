"""The import graph is a ladder (models <- objectives <- train <- harness <- online/offline <- recipes <- CLI), the
command registry is the one list of commands, and loading a config imports no jax."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from rlhfjax import commands
from rlhfjax.cli import main
from rlhfjax.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlhfjax"


def _imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports (`from a import b` counts as a and a.b), deferred imports included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _package_files(*parts):
    return sorted((PACKAGE.joinpath(*parts)).rglob("*.py"))


@pytest.mark.parametrize("layer, forbidden", [
    ("models", ("objectives", "train", "harness", "online", "offline", "recipes", "data", "commands", "config")),
    ("objectives", ("train", "harness", "online", "offline", "recipes", "data", "commands", "config")),
    ("train", ("objectives", "harness", "online", "offline", "recipes", "commands", "config")),
    ("data", ("models", "objectives", "train", "harness", "online", "offline", "recipes", "commands", "config")),
    ("harness", ("online", "offline", "recipes", "commands", "config")),
    ("online", ("offline", "recipes", "commands", "config")),
    ("offline", ("online", "recipes", "commands", "config")),
    ("commands", ("models", "objectives", "train", "harness", "online", "offline", "recipes", "data", "parallel",
                  "distributed", "sampling")),
])
def test_layers_import_downward_only(layer, forbidden):
    for path in _package_files(layer):
        bad = {m for m in _imports(path) for f in forbidden if m == f"rlhfjax.{f}" or m.startswith(f"rlhfjax.{f}.")}
        assert not bad, (str(path.relative_to(ROOT)), sorted(bad))


def test_no_method_imports_another_methods_objective_or_recipe():
    objectives = _package_files("objectives")
    methods = {p.stem for p in objectives} - {"__init__", "core", "pairwise", "kl_control", "lm"}
    for path in objectives:
        for other in methods - {path.stem}:
            assert f"rlhfjax.objectives.{other}" not in _imports(path), (path.name, other)
    ppo_recipe = PACKAGE / "recipes" / "ppo.py"
    for path in _package_files():  # nothing but PPO's own recipe reaches for PPO's objective
        if path != ppo_recipe:
            assert "rlhfjax.objectives.ppo" not in _imports(path), path
    recipes = {p.stem for p in _package_files("recipes")} - {"__init__"}
    shared = {"group_pg"}  # rloo and grpo are this recipe with a method name
    for path in _package_files("recipes"):
        for other in recipes - shared - {path.stem}:
            assert f"rlhfjax.recipes.{other}" not in _imports(path), (path.name, other)
    for path in (PACKAGE / "config.py", PACKAGE / "cli.py", PACKAGE / "api.py", *_package_files("commands")):
        assert not {m for m in _imports(path) if m.startswith("rlhfjax.recipes")}, path


def test_loading_any_config_imports_no_jax():
    """Every experiment file, default and smoke variants, loads with jax, flax and datasets never imported (a
    check before anything runs costs a fraction of a second; docs/benchmarks.md has the time)."""
    code = ("import glob, sys\nfrom rlhfjax.config import load_config\n"
            "for p in sorted(glob.glob('experiments/*.py')):\n"
            "    for v in ('', ':smoke'):\n"
            "        load_config(p + v)\n"
            "print(sorted(m for m in ('jax', 'flax', 'optax', 'datasets', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_command_is_registered_once_with_its_recipe():
    registered = commands.all_commands()
    declared = {p.stem for p in _package_files("commands")} - {"__init__"}
    assert set(registered) == declared
    for name, command in registered.items():
        assert command.name == name and command.help and (PACKAGE / "recipes" / f"{command.module.rsplit('.', 1)[1]}.py"
                                                          ).is_file(), name
    with pytest.raises(ValueError, match="registered twice"):
        commands.register(commands.Command(name="ppo", help="another"))


def test_iterate_methods_come_from_the_registry(capsys):
    methods = commands.iterate_methods()
    assert set(methods) == {"ppo", "superhf", "rloo", "grpo", "remax", "reinforce_pp", "online_dpo"}
    config = load_config(str(ROOT / "experiments" / "toylab_iterate.py"))
    assert set(config.methods) == set(methods)  # the experiment's methods.<name> sections
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert all(f"  {name:<10} {c.help}" in listing for name, c in commands.all_commands().items())


def test_every_field_check_names_a_field_some_experiment_has():
    """A check on a field no config has would never run (a typo in its name): each names a field of some
    experiment file's default or smoke config, at any nesting depth."""
    fields = set()

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            fields.add(prefix + key)

    for path in sorted((ROOT / "experiments").glob("*.py")):
        for variant in ("", ":smoke"):
            walk(json.loads(json.dumps(load_config(f"{path}{variant}").to_dict(), default=str)))
    for field in commands.field_checks():
        assert any(f == field or f.endswith("." + field) for f in fields), field


BAD_VALUES = [  # (command, its experiment file, a bad override, what the one line says)
    ("sft", "optim.learning_rate=-1", "optim.learning_rate=-1.0 is out of range (allowed: a finite number >= 0)"),
    ("sft", "optim.learning_rate=nan", "optim.learning_rate=nan is not finite"),
    ("sft", "train.steps=-5", "train.steps=-5 is out of range (allowed: an integer >= 0)"),
    ("ppo", "train.batch_size=0", "train.batch_size=0 is out of range (allowed: an integer >= 1)"),
    ("dpo", "data.max_prompt_len=0", "data.max_prompt_len=0 is out of range (allowed: an integer >= 1)"),
    ("ppo", "ppo.lam=1.5", "ppo.lam=1.5 is out of range (allowed: a finite number in [0, 1])"),
    ("dpo", "dpo.beta=0", "dpo.beta=0.0 is out of range (allowed: a finite number > 0)"),
    ("iterate", "methods.grpo.grpo.group_size=1", "methods.grpo.grpo.group_size=1 is out of range"),
    ("iterate", "iterate.method=dpo",
     "iterate.method='dpo' is not one of the choices (use one of: grpo, online_dpo, ppo"),
]


@pytest.mark.parametrize("command, override, message", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_a_bad_value_stops_the_run_at_load_with_one_line(command, override, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main([command, "--config", str(ROOT / "experiments" / f"toylab_{command}.py"), f"--config.{override}",
                 "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhfjax: error: ") and message in err and err.count("\n") == 1, err
    assert not workdir.exists()  # stopped before the run directory was made


def test_zero_steps_say_so_and_a_folder_without_config_json_is_one_line(tmp_path, capsys):
    from rlhfjax.train.loop import run_loop

    assert run_loop(7, lambda s, i: (s, {}), num_steps=0, step_of=lambda s: 0) == 7
    assert "nothing to run" in capsys.readouterr().out
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    assert main(["sft", "--config", str(ROOT / "experiments" / "toylab_sft.py:smoke"),
                 f"--config.model.init_from={empty}", f"--config.data.toylab_dir={tmp_path / 'lab'}",
                 "--workdir", str(tmp_path / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "rlhfjax: error" in line]
    assert len(errors) == 1 and "holds no config.json" in errors[0] and os.fspath(empty) in errors[0], errors
