"""The online harness: models by role, experience phases, held-out evaluation and the online runner.

A new online method is a pure loss in `objectives/` plus one iteration function in its recipe,
run by `online.runner.run_online`.
"""
