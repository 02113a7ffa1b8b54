"""Objectives: pure `loss_fn(params, batch, *, frozen, config, rng) -> (loss, metrics)` functions."""
