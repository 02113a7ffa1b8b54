"""`rlhfjax simpo`: SimPO (Meng et al. 2024) of an SFT policy on comparisons, with no reference model.

The loss is `objectives.simpo.loss_fn`: Bradley–Terry on the length-normalised rewards β/|y| · log π(y|x) with a
target margin γ = `simpo.gamma_beta_ratio` · `simpo.beta`. It runs on the offline harness (`offline.reference`)
with `Method.reference="none"`: no reference log-probs are computed or stored (no reference_logps.npz) and none
is placed on the device for the loss. The initial policy (`policy.init_from`) is still the held-out evals' KL
anchor, so SimPO lands on the same reward vs √KL axes as DPO and the online methods.

Data: any comparisons `rlhfjax dpo` reads (`data.preferences.load_comparisons`: the toy lab's annotator pools,
HH-RLHF from the hub or local files, ranked lists); pairs with a response left empty, or with identical
responses, after tokenization are skipped, counted and reported (`summary.json["skipped"]`).

Every `train.eval_every` steps, the last step and (fresh runs, `eval.at_start`) step 0 = the SFT policy:
- on the eval pairs: `eval/simpo/{loss,accuracy,margin,reward_chosen,reward_rejected,logp_chosen,logp_rejected}`
  (objectives/simpo.py) and on the toy lab `eval/simpo/gold_agreement` (the implicit reward margin's sign
  against the gold reward's preference);
- the shared held-out sampling eval: `eval/kl/seq_mean` to the initial policy, `eval/reward/gold` (toy lab),
  `eval/reward/proxy` with `reward.init_from`, response length, similarity and diversity; `samples.jsonl`.
Training records log the same `simpo/*` metrics on each batch.
"""

from __future__ import annotations

import functools

from rlhfjax.data.batching import collate_pairs
from rlhfjax.data.preferences import comparison_source
from rlhfjax.objectives import simpo as simpo_objective
from rlhfjax.offline import reference


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    """`run`, also returning the final state (`harness.state.PolicyState`, params still on the mesh)."""
    loss = dict(beta=float(config.simpo.beta), gamma_beta_ratio=float(config.simpo.gamma_beta_ratio))
    simpo_objective.SimPOLossConfig(model=None, **loss)  # a bad value fails here, before anything loads
    setup = reference.prepare(config, mesh)
    loss_config = simpo_objective.SimPOLossConfig(model=setup.roles.policy.cfg, **loss)
    train, held_out = reference.comparison_pairs(setup, "simpo")
    summarise = functools.partial(simpo_objective.pair_metrics, prefix="eval/simpo/")
    method = reference.Method(
        name="simpo", loss_fn=simpo_objective.loss_fn, loss_config=loss_config,
        collate=functools.partial(collate_pairs, encoder=setup.encoder), reference="none",
        eval_rows=simpo_objective.eval_rows,
        eval_metrics=reference.pair_eval_metrics(summarise, "simpo", setup.evaluator.gold_fn), unit="pairs",
        summary={"beta": loss_config.beta, "gamma_beta_ratio": loss_config.gamma_beta_ratio,
                 "gamma": loss_config.gamma, "data_dir": comparison_source(config.data)[1] or "",
                 "ranked_lists": bool(config.data.ranked_lists)})
    return reference.run(setup, workdir, method, train, held_out)
