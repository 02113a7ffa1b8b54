"""`rlhfjax rloo`: REINFORCE with a leave-one-out baseline over k completions per prompt (Ahmadian et
al. 2024), the KL penalty in the reward; the wiring is `recipes/group_pg.py`, the math
`objectives/group_pg.py`."""

from rlhfjax.recipes import group_pg


def run(config, workdir: str, mesh=None) -> dict:
    return group_pg.run_with_state(config, workdir, mesh, method="rloo")[0]
