"""The toy lab: an offline, seeded synthetic RLHF world with a programmatic gold reward.

See ``world.py`` (language), ``gold.py`` (gold reward and its exploitable features), ``demonstrator.py``
(SFT data), ``annotators.py`` (simulated Bradley–Terry annotators) and ``build.py`` (files on disk).
"""

from rlhfjax.data.toylab.annotators import GENERIC_POOL, POOLS, AnnotatorPool, label_tasks
from rlhfjax.data.toylab.build import Sizes, build_toylab
from rlhfjax.data.toylab.demonstrator import Demonstrator
from rlhfjax.data.toylab.gold import (GoldWeights, behaviour_metrics, gold_components, gold_margins, gold_reward,
                                      gold_rewards)
from rlhfjax.data.toylab.tokenizer import save_tokenizer, train_tokenizer
from rlhfjax.data.toylab.world import OOD_TOPICS, TOPICS, Request, parse_request, sample_request

__all__ = ["GENERIC_POOL", "POOLS", "AnnotatorPool", "label_tasks", "build_toylab", "Demonstrator", "GoldWeights",
           "behaviour_metrics", "gold_components", "gold_margins", "gold_reward", "gold_rewards", "save_tokenizer",
           "train_tokenizer",
           "OOD_TOPICS", "TOPICS", "Request", "parse_request", "sample_request"]
