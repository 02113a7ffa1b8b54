"""`rlhfjax lm`: train or fine-tune a causal LM on plain text (recipes/lm.py)."""

from rlhfjax import choices as C
from rlhfjax.commands import Command, register

register(Command(
    name="lm", help="train or fine-tune a causal LM on plain text, print samples",
    checks={"data.num_synthetic": C.POSITIVE, "data.seq_len": C.at_least(2),
            "data.eval_fraction": C.Range(0, 1, open_low=True, open_high=True), "sample.prompt_tokens": C.POSITIVE}))
