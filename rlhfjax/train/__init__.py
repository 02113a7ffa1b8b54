"""Shared training machinery: state, optimizer, the jitted update, checkpoints, metrics."""

from rlhfjax.train.optim import default_optim_config, make_optimizer, make_schedule
from rlhfjax.train.state import TrainState
from rlhfjax.train.update import NonFiniteError, check_nonfinite, update

__all__ = ["default_optim_config", "make_optimizer", "make_schedule", "TrainState",
           "NonFiniteError", "check_nonfinite", "update"]
from rlhfjax.train.checkpoint import Checkpointer, abstract_state  # noqa: E402
from rlhfjax.train.loop import restore_or_init, train  # noqa: E402
from rlhfjax.train.metrics import MetricsWriter, read_jsonl, write_config  # noqa: E402

__all__ += ["Checkpointer", "abstract_state", "restore_or_init", "train", "MetricsWriter",
            "read_jsonl", "write_config"]
