"""The command registry: every `rlhfjax <command>` declared once, in a module of this package named after it.

A declaration (`register(Command(...))`) says what the command is called, what it does in one line, which
recipe runs it, which of its config fields must be one of a few names or inside a range, and whether it can
be a round's RL stage of `rlhfjax iterate`. Everything that lists commands derives from here: the CLI, the
notebook API, `rlhfjax iterate`'s methods (and its experiment file's `methods` sections) and the checks every
config gets at load. Declarations import no jax and no recipe, so listing commands and loading a config take
a fraction of a second; the recipe is imported when the command runs.

A new command is `rlhfjax/commands/<name>.py` with one `register(Command(name=..., help=..., checks=...))`
and its recipe `rlhfjax/recipes/<name>.py` with `run(config, workdir, mesh=None)`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Mapping

import ml_collections

from rlhfjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str  # one line, for `rlhfjax --help` and `rlhfjax.api.commands()`
    checks: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # "section.field" → choices.OneOf/Range
    iterate_method: bool = False  # can be a round's RL stage of `rlhfjax iterate` (`methods.<name>` config)
    stop_field: str = "train.stop_at"  # the field that stops a run after k steps (the notebook API's steps)
    whole_run: str = ""  # why the command only runs whole ("" = it can stop part-way and continue)
    recipe: str = ""  # module with run(config, workdir, mesh=None); "" = rlhfjax.recipes.<name>
    # A method that trains a policy: its objective in one line and the paper it follows (docs/objectives.md,
    # written by scripts/objectives_table.py); "" for the other commands.
    objective: str = ""
    paper: str = ""

    @property
    def module(self) -> str:
        return self.recipe or f"rlhfjax.recipes.{self.name}"

    def run(self, config, workdir: str, mesh=None):
        """Run the recipe (importing it, and with it jax, now) → its summary."""
        run = importlib.import_module(self.module).run
        return run(config, workdir) if mesh is None else run(config, workdir, mesh)


_REGISTRY: dict[str, Command] = {}
_LOADED = False


def register(command: Command) -> Command:
    if command.name in _REGISTRY and _REGISTRY[command.name] != command:
        raise ValueError(f"command {command.name!r} is registered twice")
    _REGISTRY[command.name] = command
    return command


def _load() -> None:
    """Import every declaration in this package (cheap: they import no jax)."""
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def all_commands() -> dict[str, Command]:
    """Every registered command by name, in name order."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Command:
    commands = all_commands()
    if name not in commands:
        raise ConfigError(f"unknown command {name!r}", f"use one of: {', '.join(commands)}")
    return commands[name]


def iterate_methods() -> tuple[str, ...]:
    """The commands `rlhfjax iterate` can run as a round's RL stage."""
    return tuple(name for name, c in all_commands().items() if c.iterate_method)


def field_checks() -> dict[str, Any]:
    """Every declared field check: the shared sections' (`config_blocks.CHECKS`) and every command's."""
    from rlhfjax.config_blocks import CHECKS

    out = dict(CHECKS)
    for command in all_commands().values():
        out.update(command.checks)
    return out


def check_config(cfg: ml_collections.ConfigDict, prefix: str = "") -> None:
    """Refuse a value outside its field's choices or range now, not minutes into the run: every declared field
    found in `cfg`, and in its nested stage configs (`rlhfjax iterate`'s pm and methods.*), at any depth."""
    for field, check in field_checks().items():
        node: Any = cfg
        for part in field.split("."):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if node is None or isinstance(node, ml_collections.ConfigDict):
            continue
        problem = check.problem(node)
        if problem:
            raise ConfigError(f"{prefix}{field}={node!r} {problem}", check.allowed(node))
    for key, value in cfg.items():
        if isinstance(value, ml_collections.ConfigDict):
            check_config(value, f"{prefix}{key}.")
