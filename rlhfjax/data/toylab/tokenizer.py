"""The toy lab's word-level tokenizer, trained with ``tokenizers`` and saved as an HF tokenizer directory.

One token per word; ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"`` are single added tokens so prompts stay
short; ``<bos>`` is prepended to every encoded prompt; ``<pad>`` (id 0), ``<eos>`` and ``<unk>`` are set,
so ``transformers.AutoTokenizer.from_pretrained(dir)`` returns a ready tokenizer.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from rlhfjax.data.hh import ASSISTANT, HUMAN
from rlhfjax.data.toylab.world import vocabulary

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def train_tokenizer(corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer on ``corpus`` (default: each vocabulary word once)."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    # Equal counts for every word make the id order alphabetical, hence seed- and corpus-order independent.
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    tok.train_from_iterator(corpus if corpus is not None else vocabulary(), trainer=trainer)
    tok.add_tokens([AddedToken(HUMAN, normalized=False), AddedToken(ASSISTANT, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def save_tokenizer(out_dir: str) -> PreTrainedTokenizerFast:
    """Train and save to ``out_dir`` (loadable with ``AutoTokenizer.from_pretrained(out_dir)``)."""
    tok = train_tokenizer()
    tok.save_pretrained(out_dir)
    return tok
