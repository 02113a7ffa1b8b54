"""The notebook API (`rlhfjax.api`): the same config and metrics as the CLI, k steps at a time that add up
to the uninterrupted run, and a run reopened later."""

import json
import os
import sys

import numpy as np
import pytest

from rlhfjax import api
from rlhfjax.cli import main
from rlhfjax.errors import ConfigError
from rlhfjax.models.hf import load_pretrained

EXP = os.path.join(os.path.dirname(__file__), "..", "experiments")
PPO = os.path.join(EXP, "toylab_ppo.py") + ":smoke"


def _training(records):
    """What a run computed, without wall-clock timings."""
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in records]


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return str(tmp_path_factory.mktemp("api") / "lab")


def test_config_from_python_values_equals_the_cli_strings(lab):
    typed = api.config(PPO, {"data.toylab_dir": lab, "kl.init_coef": 0.05, "ppo.remat": False,
                             "train.iterations": 5})
    strings = api.config(PPO, [f"--config.data.toylab_dir={lab}", "--config.kl.init_coef=0.05",
                               "--config.ppo.remat=false", "--config.train.iterations=5"])
    assert typed.to_dict() == strings.to_dict()
    assert typed.kl.init_coef == 0.05 and typed.ppo.remat is False
    with pytest.raises(ConfigError, match="unknown config field"):
        api.config(PPO, {"kl.init_coeff": 0.1})


@pytest.mark.slow
def test_api_metrics_equal_the_cli_and_k_steps_at_a_time_equal_one_run(lab, tmp_path, capsys):
    """The API run goes in two pieces (1 iteration, then the rest after reopening the directory): every
    record the CLI's uninterrupted run logged, and the final policy, must come out the same."""
    cli_dir, piece_dir = str(tmp_path / "cli"), str(tmp_path / "pieces")
    assert main(["ppo", "--config", PPO, "--workdir", cli_dir, f"--config.data.toylab_dir={lab}"]) == 0
    cfg = api.config(PPO, {"data.toylab_dir": lab})
    cli_records = _training(_read(os.path.join(cli_dir, "metrics.jsonl")))
    n = cfg.train.iterations
    assert n == 3
    first = api.run("ppo", cfg, piece_dir, steps=1)
    assert first.step == 1 and first.records()[-1]["step"] == 1
    later = api.Run.open(piece_dir)  # as from a fresh kernel
    assert later.command == "ppo" and later.config.train.stop_at == 0
    later.train(n - 1)
    assert later.step == n
    assert later.summary["final"]["reward/proxy"] == cli_records[-1]["reward/proxy"]
    pieces = {r["step"]: r for r in _training(later.records())}
    for rec in cli_records:  # every training record of the uninterrupted run, bit for bit
        assert {k: pieces[rec["step"]].get(k) for k in rec} == rec  # the piecewise run only adds an eval at 1
    _, p_whole = load_pretrained(os.path.join(cli_dir, "model"))
    _, p_piece = load_pretrained(os.path.join(piece_dir, "model"))
    flat_w, flat_p = (np.concatenate([np.ravel(x) for x in _leaves(p)]) for p in (p_whole, p_piece))
    np.testing.assert_array_equal(flat_w, flat_p)
    assert later.train(5).step == n  # past the configured end: nothing more to do

    evals = later.evals()
    table = evals if isinstance(evals, list) else evals.to_dict("records")
    assert [r["step"] for r in table] == [0, 1, 2, 3]  # start, the stop at 1, every 2, the end
    assert all("eval/reward/proxy" in r for r in table)


def test_tables_without_pandas(monkeypatch):
    records = [{"step": 1, "loss": 0.5}]
    monkeypatch.setitem(sys.modules, "pandas", None)  # import fails as if not installed
    assert api.table(records) is records


def test_open_needs_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        api.Run.open(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown command"):
        api.Run("sftt", api.config(PPO), str(tmp_path))
    pmp = api.config(os.path.join(EXP, "toylab_pmp.py") + ":smoke")
    with pytest.raises(ConfigError, match="pmp runs whole"):  # its second stage would start half-trained
        api.run("pmp", pmp, str(tmp_path / "pmp"), steps=2)
    assert not os.path.exists(tmp_path / "pmp" / "pretrain")


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield np.asarray(tree)
