"""Objectives: pure `loss_fn(params, batch, *, frozen, config, rng) -> (total, count, metrics)`
functions (the loss is `total / count`, see `train.update`) and the math they are built from."""
