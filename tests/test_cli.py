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
EVERY_DEVICE = True  # conftest: CLI runs here keep the 8 data-parallel devices (the batch-size error names them)


def test_overrides_are_typed_and_applied():
    cfg = load_config(f"{LM_TINY}:smoke", ["--config.train.steps=3", "--config.optim.learning_rate", "0.5",
                                           "--config.model.family=gpt2"])
    assert cfg.train.steps == 3 and cfg.optim.learning_rate == 0.5 and cfg.model.family == "gpt2"
    assert cfg.data.seq_len == 24  # the smoke variant shrank it


def test_a_tuple_of_names_may_be_written_bare_and_a_tuple_of_numbers_may_not():
    sweep = os.path.join(os.path.dirname(__file__), "..", "experiments", "kl_scaling_toy.py")
    for text in ("(ppo, grpo)", "ppo,grpo", "['ppo', 'grpo']", "('ppo', 'grpo')"):
        assert load_config(sweep, [f"--config.methods={text}"]).methods == ("ppo", "grpo"), text
    assert load_config(sweep, ["--config.ppo.grid=(0.5, 1)"]).ppo.grid == (0.5, 1)
    with pytest.raises(ConfigError, match=r"ppo\.grid: cannot parse '\(small, big\)' as tuple"):
        load_config(sweep, ["--config.ppo.grid=(small, big)"])


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


# --------------------------------------------------------------------------------------------
# User errors: one line, exit status 2; --debug shows the traceback; bugs still raise


def _word_tokenizer(tmp_path):
    from rlhfjax.recipes.lm import train_word_tokenizer

    path = str(tmp_path / "tok")
    train_word_tokenizer(["a b c d"]).save_pretrained(path)
    return path


def _one_line_error(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhfjax: error: ") and "\n" not in err and "Traceback" not in err, err
    assert expect in err, err
    return err


@pytest.mark.parametrize("case", ["checkpoint", "tokenizer", "text_file", "batch_size", "nonfinite"])
def test_user_errors_print_one_line_with_a_fix(tmp_path, capsys, case):
    argv = ["lm", "--config", f"{LM_TINY}:smoke", "--workdir", str(tmp_path / "run")]
    extra, expect = {
        "checkpoint": ([f"--config.model.init_from={tmp_path}/no/such/model",
                        f"--config.tokenizer.path={_word_tokenizer(tmp_path)}"], "no such checkpoint directory"),
        "tokenizer": ([f"--config.tokenizer.path={tmp_path}/no-tokenizer"], "could not load a tokenizer"),
        "text_file": ([f"--config.data.text_path={tmp_path}/missing.txt"], "no such text file"),
        "batch_size": (["--config.train.batch_size=3"], "not divisible by the 8 data-parallel devices"),
        # A learning rate that blows the params up: the loss turns non-finite, those steps are skipped (optax's
        # apply_if_finite), and the second in a row stops the run.
        "nonfinite": (["--config.optim.learning_rate=1e30", "--config.optim.max_consecutive_nonfinite=2",
                       "--config.train.save_every=1"], "2 consecutive steps had a non-finite loss or gradient"),
    }[case]
    err = _one_line_error(capsys, argv + extra, expect)
    assert err.endswith(")")  # "<what> (<how to fix>)"
    if case == "nonfinite":  # the step that hit the limit is not checkpointed (earlier skipped ones left params as
        from rlhfjax.train.checkpoint import latest_step  # they were: test_checkpoint restores and checks them)

        stopped_at = int(err.split(" at step ")[1].split()[0])
        assert 0 < latest_step(str(tmp_path / "run" / "checkpoints")) < stopped_at


@pytest.mark.parametrize("case", ["data_file", "bad_rows"])
def test_data_errors_print_one_line(tmp_path, capsys, case):
    sft_cfg = os.path.join(os.path.dirname(__file__), "..", "experiments", "toylab_sft.py")
    data = tmp_path / "sft.jsonl"
    if case == "bad_rows":  # every row lacks an Assistant turn
        data.write_text("".join(json.dumps({"text": f"\n\nHuman: hi {i}"}) + "\n" for i in range(10)))
    argv = ["sft", "--config", f"{sft_cfg}:smoke", "--workdir", str(tmp_path / "run"),
            f"--config.data.source={data}", f"--config.tokenizer.path={_word_tokenizer(tmp_path)}"]
    expect = "no such local data" if case == "data_file" else "10 of 10 rows are bad"
    _one_line_error(capsys, argv, expect)


def test_debug_shows_the_traceback_and_bugs_still_raise(tmp_path, monkeypatch):
    from rlhfjax.errors import MissingPathError

    argv = ["lm", "--config", f"{LM_TINY}:smoke", "--workdir", str(tmp_path / "run"),
            f"--config.data.text_path={tmp_path}/missing.txt"]
    with pytest.raises(MissingPathError):
        main(argv + ["--debug"])
    import rlhfjax.recipes.lm as lm_recipe

    def broken(config, workdir):
        raise RuntimeError("a bug")

    monkeypatch.setattr(lm_recipe, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(argv[:5])


def test_cli_silences_the_missing_torch_advice():
    """transformers advises at import that PyTorch is missing; the CLI turns that off (torch is hidden here)."""
    hide = "import sys; sys.modules['torch'] = None; "
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    plain = subprocess.run([sys.executable, "-c", hide + "import transformers"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert "PyTorch was not found" in plain.stderr  # the advice exists: this test can see it
    quiet = subprocess.run([sys.executable, "-c", hide + "import rlhfjax.cli, transformers"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and "PyTorch was not found" not in quiet.stderr, quiet.stderr


def test_prompt_preview_shows_the_last_human_turn_cut():
    from rlhfjax.data.examples import preview, prompt_preview

    long_turn = "tell me about rivers " * 30
    prompt = f"\n\nHuman: first question\n\nAssistant: an answer\n\nHuman: {long_turn}\n\nAssistant:"
    shown = prompt_preview(prompt, limit=80)
    assert len(shown) <= 80 + len("[cut]") and shown.endswith("…[cut]") and shown.startswith("tell me about rivers")
    assert "first question" not in shown and "Assistant" not in shown
    assert prompt_preview("\n\nHuman: short?\n\nAssistant:") == "short?"
    assert preview("two\nlines") == "two lines"
