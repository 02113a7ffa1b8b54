"""Experiment configs: ml-collections files with `get_config()`, plus typed command-line overrides.

`load_config("experiments/lm_tiny.py:smoke", ["--config.train.steps=5"])` imports the file, calls
`get_config("smoke")`, applies the overrides and locks the result. An override of a field that does
not exist, or whose value does not parse as the field's type, is rejected with a message naming
the field — a typo must never silently start a run with the default. Fields whose value must be
one of a few names (`rm.objective`, `kl.controller`, `mesh.strategy`, ...) or lie in a range (learning
rate finite and ≥ 0, batch sizes ≥ 1, probabilities in [0, 1], ...) are checked at load too, as their
sections and commands declare them (`config_blocks.CHECKS`, `rlhfjax.commands`). Nothing here imports jax.

Paths: a default in an experiment file that starts with `runs/` (toy-lab data, the previous
stage's model, the CLI's default run directory) is relative to the *project root*, not the working
directory: `$RLHFJAX_HOME` if set, else the folder that holds the file's `experiments/` (or
`scripts/`) folder, else the working directory. Paths given on the command line are used as typed.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from rlhfjax.commands import check_config
from rlhfjax.errors import ConfigError  # noqa: F401 (a config file or override that cannot be applied)

OVERRIDE_PREFIX = "--config."


def _import_config_file(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r}")
    spec = importlib.util.spec_from_file_location(f"rlhfjax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config()")
    return module


def load_config_file(config_string: str) -> ml_collections.ConfigDict:
    """`path.py` or `path.py:arg` -> ConfigDict from the file's `get_config([arg])`, with its `runs/...`
    defaults resolved against `project_root(path)`."""
    path, _, arg = config_string.partition(":")
    module = _import_config_file(path)
    try:
        cfg = module.get_config(arg) if arg else module.get_config()
    except ValueError as e:  # get_config's own refusal, e.g. an unknown variant
        raise ConfigError(f"{config_string}: {e}") from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    _resolve_run_paths(cfg, project_root(path))
    return cfg


RUNS = "runs"


def project_root(path: str | None = None) -> str:
    """Where `runs/` lives: `$RLHFJAX_HOME`, else the parent of the `experiments/` or `scripts/` folder
    holding `path`, else the working directory."""
    home = os.environ.get("RLHFJAX_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    if path is not None:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.basename(folder) in ("experiments", "scripts"):
            return os.path.dirname(folder)
    return os.getcwd()


def _resolve_run_paths(cfg: ml_collections.ConfigDict, root: str) -> None:
    for key, value in cfg.items():
        if isinstance(value, ml_collections.ConfigDict):
            _resolve_run_paths(value, root)
        elif isinstance(value, str) and (value == RUNS or value.startswith(RUNS + "/")):
            cfg[key] = os.path.join(root, value)


def _all_fields(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in cfg.items():
        out.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            out.extend(_all_fields(value, prefix + key + "."))
    return out


def _parse_value(field: str, current: Any, text: str) -> Any:
    """Parse `text` as the type of the field's current value."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{field}: expected a bool (true/false), got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{field}: expected an int, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{field}: expected a float, got {text!r}") from None
    if isinstance(current, str):
        return text
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"--config.{field} is a group of fields; set its fields one by one")
    # None, tuples, lists, dicts: Python literal syntax, falling back to a plain string for None.
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        if isinstance(current, (tuple, list)) and current and all(isinstance(v, str) for v in current):
            # a tuple of names may be written bare: (ppo, grpo) or ppo,grpo
            names = [n.strip() for n in text.strip().strip("()[]").split(",")]
            return type(current)(n for n in names if n)
        raise ConfigError(f"--config.{field}: cannot parse {text!r} as {type(current).__name__}") from None
    if current is not None and not isinstance(value, type(current)):
        if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
            return type(current)(value)
        raise ConfigError(f"--config.{field}: expected {type(current).__name__}, got {text!r}")
    return value


def split_overrides(argv: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pull `--config.a.b=v` / `--config.a.b v` pairs out of argv; return (overrides, rest)."""
    overrides, rest = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(OVERRIDE_PREFIX):
            key, eq, value = arg[len(OVERRIDE_PREFIX):].partition("=")
            if not eq:
                if i + 1 >= len(args):
                    raise ConfigError(f"{arg} needs a value")
                value = args[i + 1]
                i += 1
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]):
    known = _all_fields(cfg)
    for field, text in overrides:
        node = cfg
        parts = field.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                close = difflib.get_close_matches(field, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"unknown config field {field!r}{hint}")
            if depth < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        value = _parse_value(field, current, text)
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise ConfigError(f"--config.{field}: {e}") from None
    return cfg


def load_config(config_string: str, overrides: Sequence[str] | Sequence[tuple[str, str]] = ()):
    """Config file + overrides (strings like `--config.a=1` or (field, value) pairs), locked."""
    pairs = (split_overrides(overrides)[0] if overrides and isinstance(overrides[0], str)
             else list(overrides))
    cfg = load_config_file(config_string)
    apply_overrides(cfg, pairs)
    check_config(cfg)
    cfg.lock()
    return cfg
