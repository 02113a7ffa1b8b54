"""`rlhfjax grpo`: group-normalised advantages, clipped ratio and a per-token KL term to the reference
(Shao et al. 2024); the wiring is `recipes/group_pg.py`, the math `objectives/group_pg.py`."""

from rlhfjax.recipes import group_pg


def run(config, workdir: str, mesh=None) -> dict:
    return group_pg.run_with_state(config, workdir, mesh, method="grpo")[0]
