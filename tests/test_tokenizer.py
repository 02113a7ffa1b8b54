"""Tokenizers load through transformers.AutoTokenizer from a directory, with a pad token."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rlhfjax.data.tokenizing import load_tokenizer


def _save_tokenizer(path, with_pad: bool):
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(["hello world", "goodbye world"],
                            trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>", "<pad>"]))
    extra = {"pad_token": "<pad>"} if with_pad else {}
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", **extra).save_pretrained(path)


@pytest.mark.parametrize("with_pad", [True, False])
def test_local_tokenizer_dir(tmp_path, with_pad):
    _save_tokenizer(str(tmp_path), with_pad)
    tok = load_tokenizer(str(tmp_path))
    assert tok("hello world")["input_ids"] == [tok.convert_tokens_to_ids("hello"), tok.convert_tokens_to_ids("world")]
    # GPT-2/Pythia/Llama ship no pad token: it falls back to EOS.
    assert tok.pad_token == ("<pad>" if with_pad else "<eos>")


def test_missing_tokenizer_names_the_path(tmp_path):
    with pytest.raises(OSError, match="nothing-here"):
        load_tokenizer(str(tmp_path / "nothing-here"))
