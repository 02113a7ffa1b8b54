"""The online harness: the runner every sample → score → update method shares (`runner`), and iterated online
RLHF's comparisons and labelling rounds.

A new online method is a pure loss in `objectives/` plus one iteration function in its recipe, run by
`online.runner.run_online` on the shared roles, rollout phases and evaluation of `rlhfjax.harness`.
"""
