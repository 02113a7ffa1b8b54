"""Every config string rlhfjax accepts, one tuple per vocabulary, importing nothing.

The code that reads a field imports its tuple from here (and re-exports it under its old name), and the
command declarations (`rlhfjax.commands`) check configs against the same tuple at load, so a config can be
checked without importing jax. A new vocabulary is one line here.
"""

# Objectives
KL_ESTIMATORS = ("k1", "k2", "k3")  # per-token KL estimators (objectives.core.kl_per_token)
FIRST_RATIOS = ("own_logp", "remat")  # how the first minibatch's ratio is exactly 1 (objectives.core.rollout_logp)
AGGREGATIONS = ("token_mean", "sequence_mean", "sequence_sum")  # token losses → loss (objectives.group_pg)
DPO_LOSSES = ("dpo", "ipo", "cdpo")  # objectives.dpo
IPO_NORMALISE = ("sum", "mean")  # IPO's Δ from summed (the paper's Eq. 17) or per-token mean log-probs
KTO_DATA = ("pairs", "gold_threshold")  # kto: unpaired examples from split comparisons or gold-thresholded demos
JUDGES = ("reward", "gold")  # online_dpo: who picks the preferred sample (the RM, or the toy lab's gold reward)
RM_OBJECTIVES = ("ranked", "binary", "imitation")  # objectives.rm
KL_PRIORS = ("ref_policy", "policy_ref")  # SuperHF's KL direction (objectives.superhf)
KL_CONTROLLERS = ("adaptive", "fixed")  # objectives.kl_control

# Models, meshes, optimizers, data
MODEL_FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")  # models.config presets and HF interop
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")  # per-block rematerialisation (jax.checkpoint_policies)
DTYPES = ("float32", "bfloat16", "float16")  # compute dtypes a model section may name
MESH_STRATEGIES = ("dp", "fsdp", "tp", "custom")  # parallel.make_mesh
DISTRIBUTED_MODES = ("auto", "on", "off")  # rlhfjax.distributed: join a multi-process run or not
SCHEDULES = ("constant", "cosine", "linear")  # train.optim
TEMPLATES = ("auto", "hh", "chat")  # data.batching: plain HH transcript or the tokenizer's chat template
ANNOTATOR_POOLS = ("helpful", "harmless", "mixed")  # the toy lab's simulated annotators

# Harness and commands
VALUE_MODELS = ("separate", "policy_head")  # harness.roles: PPO's value model
LABELLERS = ("simulated", "external")  # online.labelling_round: who labels iterate's comparisons
PM_INITS = ("previous", "base")  # iterate: where each round's PM starts
DISTILL_RESPONSES = ("teacher", "dataset")  # distill: what the student is distilled on
EXPERIENCE_JITS = ("auto", "fused", "phases")  # ppo: the experience phases as one jit or one each
RM_SELECT_BY = ("loss", "accuracy")  # rm: the validation metric that picks the exported params


# --------------------------------------------------------------------------------------------
# Checks: what a field may hold, declared next to the field (`config_blocks`, `rlhfjax.commands`)


class OneOf:
    """A field that must be one of `values`: a vocabulary above, or a function returning one (a list known only
    once every command is registered, e.g. `rlhfjax iterate`'s methods)."""

    def __init__(self, values):
        self._values = values if callable(values) else tuple(values)

    @property
    def values(self) -> tuple:
        return tuple(self._values() if callable(self._values) else self._values)

    def problem(self, value) -> str | None:
        return None if value in self.values else "is not one of the choices"

    def allowed(self, value=None) -> str:
        return "use one of: " + ", ".join(map(str, self.values))


class Range:
    """A finite number in [low, high] (`open_low` / `open_high`: the bound itself excluded); each element of a
    tuple or list value is checked; None (an optional field left unset) passes."""

    def __init__(self, low: float | None = None, high: float | None = None, *, open_low: bool = False,
                 open_high: bool = False):
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def problem(self, value) -> str | None:
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return next((f"holds {v!r}, which {p}" for v in value if (p := self.problem(v))), None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a number"
        if value != value or value in (float("inf"), float("-inf")):
            return "is not finite"
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return "is out of range"
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            return "is out of range"
        return None

    def allowed(self, value=None) -> str:
        """What the field may hold, in words; an integer `value` (an int field) says "an integer"."""
        kind = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a finite number"
        if self.low is not None and self.high is not None:
            return (f"allowed: {kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.open_high else ']'}")
        if self.low is not None:
            return f"allowed: {kind} {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"allowed: {kind} {'<' if self.open_high else '<='} {self.high:g}"
        return f"allowed: {kind}"


def at_least(low: float) -> Range:
    return Range(low)


def above(low: float) -> Range:
    return Range(low, open_low=True)


FINITE = Range()  # any finite number (a coefficient that may be negative)
NON_NEGATIVE = at_least(0)  # learning rates, coefficients, counts of steps
POSITIVE = at_least(1)  # batch sizes, lengths, epochs (integer fields)
PROBABILITY = Range(0, 1)  # fractions and probabilities
TEMPERATURE = above(0)  # sampling temperatures, β's that divide
TOP_P = Range(0, 1, open_low=True)  # nucleus mass: (0, 1]
