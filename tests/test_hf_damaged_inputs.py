"""A damaged HF checkpoint folder is a one-line user error naming the file and the tensor (issue 32, part 5).

Each test copies one tiny random GPT-2 checkpoint (written once by transformers), damages it the way a
user's disk or download would, and checks the error type and what its message names. Nothing trains.
"""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hf_fixtures import make_checkpoint
from rlhfjax.errors import BadInputError, MissingPathError
from rlhfjax.models.hf import SAFE_INDEX, SAFE_SINGLE, load_pretrained

LM_TINY = os.path.join(os.path.dirname(__file__), "..", "experiments", "lm_tiny.py")
FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """{"single": dir, "sharded": dir} of one tiny GPT-2, saved whole and in several shards."""
    root = tmp_path_factory.mktemp("hf_damaged")
    model = make_checkpoint("gpt2", root / "single")
    model.save_pretrained(str(root / "sharded"), max_shard_size="40KB")
    return {"single": root / "single", "sharded": root / "sharded"}


@pytest.fixture
def ckpt(originals, tmp_path):
    """A fresh copy to damage: ckpt("single") or ckpt("sharded")."""
    def copy(kind="single"):
        return shutil.copytree(originals[kind], tmp_path / kind)
    return copy


def _load_error(path, kind=BadInputError):
    with pytest.raises(kind) as err:
        load_pretrained(str(path))
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_unknown_model_type_names_config_file_and_known_types(ckpt):
    d = ckpt()
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "bert"
    (d / "config.json").write_text(json.dumps(config))
    msg = _load_error(d)
    assert str(d / "config.json") in msg and "'bert'" in msg
    assert all(f in msg for f in FAMILIES)

    del config["model_type"]
    (d / "config.json").write_text(json.dumps(config))
    msg = _load_error(d)
    assert str(d / "config.json") in msg and "no model_type" in msg

    (d / "config.json").write_text(json.dumps(config)[:40])  # cut mid-file
    msg = _load_error(d)
    assert str(d / "config.json") in msg and "not valid JSON" in msg


def test_missing_tensor_names_tensor_and_file(ckpt):
    d = ckpt()
    tensors = load_file(str(d / SAFE_SINGLE))
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, str(d / SAFE_SINGLE), metadata={"format": "pt"})
    msg = _load_error(d)
    assert str(d / SAFE_SINGLE) in msg and "lacks 1 tensor" in msg and "transformer.h.1.mlp.c_fc.bias" in msg


def test_mismatched_shape_names_tensor_file_and_both_shapes(ckpt):
    d = ckpt()
    tensors = load_file(str(d / SAFE_SINGLE))
    assert tensors["transformer.h.0.mlp.c_proj.weight"].shape == (128, 32)
    tensors["transformer.h.0.mlp.c_proj.weight"] = np.zeros((120, 32), np.float32)
    save_file(tensors, str(d / SAFE_SINGLE), metadata={"format": "pt"})
    msg = _load_error(d)
    assert str(d / SAFE_SINGLE) in msg and "'transformer.h.0.mlp.c_proj.weight'" in msg
    assert "(120, 32)" in msg and "(128, 32)" in msg and "layer_0/mlp/fc_out/kernel" in msg


def _first_cut_tensor(path, new_size):
    """The tensor (lowest data offset) whose bytes a cut to `new_size` bytes reaches, read from the header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return min((e["data_offsets"][0], name) for name, e in header.items()
               if 8 + n + e["data_offsets"][1] > new_size)[1]


@pytest.mark.parametrize("cut", ["half", "last_byte", "inside_header", "length_field", "empty"])
def test_truncated_safetensors_names_file_and_first_cut_tensor(ckpt, cut):
    d = ckpt()
    path = d / SAFE_SINGLE
    size = os.path.getsize(path)
    new_size = {"half": size // 2, "last_byte": size - 1, "inside_header": 100, "length_field": 4, "empty": 0}[cut]
    first_cut = _first_cut_tensor(path, new_size) if cut in ("half", "last_byte") else None
    os.truncate(path, new_size)
    msg = _load_error(d)
    assert str(path) in msg and "truncated" in msg
    if first_cut:  # header intact: the first tensor whose data is cut off is named
        assert f"the data of tensor {first_cut!r}" in msg


def test_sharded_checkpoint_with_a_missing_shard_names_shard_and_tensor(ckpt):
    d = ckpt("sharded")
    weight_map = json.loads((d / SAFE_INDEX).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) > 1
    os.remove(d / shards[-1])
    msg = _load_error(d, MissingPathError)
    held = sorted(n for n, f in weight_map.items() if f == shards[-1])
    assert str(d / shards[-1]) in msg and repr(held[0]) in msg and SAFE_INDEX in msg


def test_sharded_checkpoint_with_a_truncated_shard_or_a_misplaced_tensor(ckpt):
    d = ckpt("sharded")
    index = json.loads((d / SAFE_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    good = d / shards[0]
    shutil.copy(good, d / "good.bak")
    os.truncate(good, os.path.getsize(good) // 2)
    msg = _load_error(d)
    assert str(good) in msg and "truncated" in msg
    os.replace(d / "good.bak", good)
    assert load_pretrained(str(d))[0].family == "gpt2"  # repaired: loads again

    name = next(n for n, f in index["weight_map"].items() if f == shards[0])
    index["weight_map"][name] = shards[1]  # the index now points at a shard without that tensor
    (d / SAFE_INDEX).write_text(json.dumps(index))
    msg = _load_error(d)
    assert str(d / shards[1]) in msg and repr(name) in msg and SAFE_INDEX in msg

    (d / SAFE_INDEX).write_text('{"weight_map": ')
    msg = _load_error(d)
    assert str(d / SAFE_INDEX) in msg and "unreadable" in msg


def test_cli_prints_one_line_and_exits_2(ckpt, capsys):
    from rlhfjax.cli import main
    from rlhfjax.recipes.lm import synthetic_corpus, train_word_tokenizer

    d = ckpt()
    train_word_tokenizer(synthetic_corpus(50, 0)).save_pretrained(str(d))  # `lm` reads init_from's tokenizer
    os.truncate(d / SAFE_SINGLE, os.path.getsize(d / SAFE_SINGLE) // 2)
    capsys.readouterr()
    assert main(["lm", "--config", f"{LM_TINY}:smoke", f"--config.model.init_from={d}",
                 "--workdir", str(d.parent / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhfjax: error: ")
    assert str(d / SAFE_SINGLE) in err[0] and "truncated" in err[0] and "the data of tensor 'transformer." in err[0]
