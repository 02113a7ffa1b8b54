"""The command line: config files, typed overrides, and one command end to end."""

import json
import os
import subprocess
import sys

import pytest

from rlhfjax.cli import main
from rlhfjax.config import ConfigError, load_config
from rlhfjax.models.hf import load_pretrained

LM_TINY = os.path.join(os.path.dirname(__file__), "..", "experiments", "lm_tiny.py")


def test_overrides_are_typed_and_applied():
    cfg = load_config(f"{LM_TINY}:smoke", ["--config.train.steps=3", "--config.optim.learning_rate", "0.5",
                                           "--config.model.family=gpt2"])
    assert cfg.train.steps == 3 and cfg.optim.learning_rate == 0.5 and cfg.model.family == "gpt2"
    assert cfg.data.seq_len == 24  # the smoke variant shrank it


def test_unknown_field_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config field 'train\.stepz'.*train\.steps"):
        load_config(LM_TINY, ["--config.train.stepz=3"])


@pytest.mark.parametrize("override,expect", [
    ("--config.train.steps=ten", r"train\.steps: expected an int, got 'ten'"),
    ("--config.optim.learning_rate=fast", r"optim\.learning_rate: expected a float"),
    ("--config.data=3", r"data is a group of fields"),
])
def test_wrong_types_are_rejected(override, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(LM_TINY, [override])


def test_cli_rejects_unknown_field_with_exit_code_2(tmp_path, capsys):
    assert main(["lm", "--config", LM_TINY, "--config.model.hiden_size=8", "--workdir", str(tmp_path)]) == 2
    assert "model.hiden_size" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()


def test_unknown_model_field_in_config_file_is_named(tmp_path):
    from rlhfjax.models.factory import model_from_config
    import jax
    import ml_collections

    section = ml_collections.ConfigDict({"family": "llama", "init_from": "", "hiden_size": 8})
    with pytest.raises(ValueError, match="hiden_size"):
        model_from_config(section, 32, jax.random.PRNGKey(0))


def test_lm_command_end_to_end(tmp_path):
    """The installed console script trains the smoke config and leaves a complete run directory."""
    workdir = tmp_path / "run"
    exe = os.path.join(os.path.dirname(sys.executable), "rlhfjax")
    proc = subprocess.run([exe, "lm", "--config", f"{LM_TINY}:smoke", "--config.train.steps=4",
                           "--workdir", str(workdir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["train"]["steps"] == 4  # the override, not the file's value
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in records)
    assert [r["step"] for r in records if "eval/nll" in r] == [3, 4]
    summary = json.loads((workdir / "summary.json").read_text())
    assert len(summary["samples"]) == 2
    # The exported model is a loadable HF checkpoint with the trained vocabulary.
    cfg, _ = load_pretrained(str(workdir / "model"))
    assert cfg.vocab_size == len(json.loads((workdir / "tokenizer" / "tokenizer.json").read_text())
                                 ["model"]["vocab"])
