"""The notebook API: configs from experiment files, any command run in process for k steps, metrics
back as a table, and the same run continued later.

    from rlhfjax import api

    cfg = api.config("experiments/toylab_ppo.py", {"kl.init_coef": 0.05, "train.iterations": 100})
    run = api.run("ppo", cfg, "runs/nb/ppo", steps=10)   # the first 10 of 100 iterations
    run.metrics()                                         # a pandas DataFrame (or records without pandas)
    run.evals()                                           # the eval rows only
    run.train(10)                                         # 10 more, exactly as one uninterrupted run
    run = api.Run.open("runs/nb/ppo")                     # later, in a fresh kernel: the same run

A step is the command's own unit: an optimizer step (sft, rm, dpo, lm), an iteration (ppo, superhf,
rloo, grpo) or a round (iterate); pmp, bon and ood run whole. Stopping early leaves every schedule sized for
the whole run (`train.stop_at`, `iterate.stop_at`), so runs continued piecewise match the CLI's
uninterrupted run; each stop still exports the model and writes summary.json, as the CLI would.
Runs are ordinary run directories: the CLI can continue what the API started, and the other way round.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import ml_collections

from rlhfjax import commands as registry
from rlhfjax.atomic_files import write_config
from rlhfjax.config import load_config
from rlhfjax.errors import ConfigError, MissingPathError

RUN_FILE = "api_run.json"  # which command a run directory belongs to (Run.open)


def commands() -> dict[str, str]:
    """Command name → what it does (the CLI's list)."""
    return {name: c.help for name, c in registry.all_commands().items()}


def _text(value: Any) -> str:
    """A Python value as the CLI would write it after `--config.x=`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def config(experiment: str, overrides: Mapping[str, Any] | Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config of `experiment` (`path.py` or `path.py:variant`) with `overrides`: {"a.b": value} with
    Python values, or CLI strings ["--config.a.b=value", ...]. Checked and locked, as the CLI does."""
    if isinstance(overrides, Mapping):
        pairs = [(k, _text(v)) for k, v in overrides.items()]
        return load_config(experiment, pairs)
    return load_config(experiment, list(overrides))


def _stop_field(command: str) -> tuple[str, str]:
    section, _, field = registry.get(command).stop_field.partition(".")
    return section, field


def _with_stop(cfg: ml_collections.ConfigDict, command: str, stop: int) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict(cfg.to_dict())
    section, field = _stop_field(command)
    if section not in out:
        raise ConfigError(f"a {command} config needs a `{section}` section to run a number of steps")
    out[section][field] = stop
    out.lock()
    return out


def progress(command: str, workdir: str) -> int:
    """Steps (rounds for iterate) a run directory has completed and can continue from."""
    if command == "iterate":
        return sum(os.path.exists(os.path.join(workdir, d, "round.json"))
                   for d in os.listdir(workdir) if d.startswith("round_")) if os.path.isdir(workdir) else 0
    ckpt = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt):
        return 0
    from rlhfjax.train.checkpoint import Checkpointer

    checkpointer = Checkpointer(ckpt)
    try:
        return checkpointer.latest_step() or 0
    finally:
        checkpointer.close()


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(records: list[dict]):
    """Records as a pandas DataFrame when pandas is installed, else the list itself."""
    try:
        import pandas as pd
    except ImportError:
        return records
    return pd.DataFrame.from_records(records)


class Run:
    """A run directory of one command: run it further, read what it logged."""

    def __init__(self, command: str, cfg: ml_collections.ConfigDict, workdir: str, mesh=None):
        registry.get(command)  # an unknown command is a one-line error naming the known ones
        self.command, self.config, self.workdir, self.mesh = command, cfg, os.path.abspath(workdir), mesh
        self.summary: dict | None = None

    @classmethod
    def open(cls, workdir: str, command: str | None = None, mesh=None) -> "Run":
        """An existing run directory (started by the API, or by the CLI when `command` is given)."""
        marker, cfg_path = os.path.join(workdir, RUN_FILE), os.path.join(workdir, "config.json")
        if command is None:
            if not os.path.exists(marker):
                raise MissingPathError(f"{marker} not found", "pass the command: Run.open(workdir, 'ppo')")
            with open(marker) as f:
                command = json.load(f)["command"]
        if not os.path.exists(cfg_path):
            raise MissingPathError(f"{cfg_path} not found", "is this a run directory?")
        with open(cfg_path) as f:
            cfg = ml_collections.ConfigDict(json.load(f))
        section, field = _stop_field(command)
        if section in cfg and field in cfg[section]:
            cfg[section][field] = 0  # the saved config is the last piece's; the run itself has no stop
        cfg.lock()
        return cls(command, cfg, workdir, mesh)

    @property
    def step(self) -> int:
        return progress(self.command, self.workdir)

    def train(self, steps: int | None = None) -> "Run":
        """Run `steps` more steps (None: to the end of the configured run) in this process."""
        whole = registry.get(self.command).whole_run
        if steps is not None and whole:
            raise ConfigError(f"{self.command} runs whole: call train() without steps", whole)
        from rlhfjax import run_lock

        with run_lock.hold(self.workdir, self.command):  # a second live run here (CLI or notebook) is refused
            stop = 0 if steps is None else self.step + int(steps)
            cfg = self.config if steps is None else _with_stop(self.config, self.command, stop)
            write_config(self.workdir, cfg)
            with open(os.path.join(self.workdir, RUN_FILE), "w") as f:
                json.dump({"command": self.command}, f)
            self.summary = registry.get(self.command).run(cfg, self.workdir, self.mesh)
        return self

    def records(self) -> list[dict]:
        """metrics.jsonl as a list of dicts (one per logged step; iterate: one per round)."""
        return _read_jsonl(os.path.join(self.workdir, "metrics.jsonl"))

    def metrics(self, prefix: str = ""):
        """The logged records with keys starting with `prefix` (plus `step`), as a table (`table`)."""
        rows = [{"step": r["step"], **{k: v for k, v in r.items() if k.startswith(prefix) and k != "step"}}
                for r in self.records()]
        return table([r for r in rows if len(r) > 1])

    def evals(self):
        """The eval records (`eval/...` keys) as a table."""
        return self.metrics("eval/")


def run(command: str, cfg: ml_collections.ConfigDict | str, workdir: str, *, steps: int | None = None,
        mesh=None) -> Run:
    """Run `command` with `cfg` (a config, or an experiment path) in `workdir` for `steps` steps from
    where that directory is (None: to the end) and return the `Run`."""
    if isinstance(cfg, str):
        cfg = config(cfg)
    return Run(command, cfg, workdir, mesh).train(steps)
