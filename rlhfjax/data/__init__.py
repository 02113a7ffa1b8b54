"""Data room: generic row sources, HH-format parsing and loading, example types, tokenization/batching,
online labelling, the toy lab."""

from rlhfjax.data.batching import (BatchIterator, Encoder, TokenizeConfig, bucket_length, collate_pairs,
                                   collate_prompts, collate_ranked, collate_sft, make_iterator)
from rlhfjax.data.examples import PreferencePair, PromptExample, RankedList, SFTExample
from rlhfjax.data.hh import ASSISTANT, HUMAN, load_hh, load_prompts, load_ranked, load_sft, split_transcript
from rlhfjax.data.sources import BadDataError, LoadReport, load_rows

__all__ = ["BatchIterator", "Encoder", "TokenizeConfig", "bucket_length", "collate_pairs", "collate_prompts",
           "collate_ranked", "collate_sft", "make_iterator", "ASSISTANT", "HUMAN", "BadDataError", "LoadReport",
           "load_hh", "load_prompts", "load_ranked", "load_rows", "load_sft", "split_transcript",
           "PreferencePair", "PromptExample", "RankedList", "SFTExample"]
