"""`rlhfjax orpo`: ORPO (Hong et al. 2024) of a policy on comparisons: the chosen response's NLL plus λ times an
odds-ratio penalty, with no reference model.

The loss is `objectives.orpo.loss_fn` (λ = `orpo.odds_ratio_weight`). It runs on the offline harness
(`offline.reference`) with `Method.reference="none"`: no reference log-probs are computed or stored (no
reference_logps.npz) and none is placed on the device for the loss. The initial policy (`policy.init_from`) is
still the held-out evals' KL anchor, so ORPO lands on the same reward vs √KL axes as DPO and the online methods.
The paper starts ORPO from a base model (SFT and preference in one stage); on the toy lab it starts from the SFT
policy, as DPO does, so the two compare from the same point.

Data: any comparisons `rlhfjax dpo` reads (`data.preferences.load_comparisons`: the toy lab's annotator pools,
HH-RLHF from the hub or local files, ranked lists); pairs with a response left empty, or with identical
responses, after tokenization are skipped, counted and reported (`summary.json["skipped"]`).

Every `train.eval_every` steps, the last step and (fresh runs, `eval.at_start`) step 0 = the initial policy:
- on the eval pairs: `eval/orpo/{loss,nll,or,margin,accuracy,logp_chosen,logp_rejected}` (objectives/orpo.py:
  the two terms L_SFT and L_OR, the log odds ratio, how often it favours the chosen response) and on the toy lab
  `eval/orpo/gold_agreement` (the log odds ratio's sign against the gold reward's preference);
- the shared held-out sampling eval: `eval/kl/seq_mean` to the initial policy, `eval/reward/gold` (toy lab),
  `eval/reward/proxy` with `reward.init_from`, response length, similarity and diversity; `samples.jsonl`.
Training records log the same `orpo/*` metrics on each batch.
"""

from __future__ import annotations

import functools

from rlhfjax.data.batching import collate_pairs
from rlhfjax.data.preferences import comparison_source
from rlhfjax.objectives import orpo as orpo_objective
from rlhfjax.offline import reference


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    """`run`, also returning the final state (`harness.state.PolicyState`, params still on the mesh)."""
    loss = dict(odds_ratio_weight=float(config.orpo.odds_ratio_weight))
    orpo_objective.ORPOLossConfig(model=None, **loss)  # a bad value fails here, before anything loads
    setup = reference.prepare(config, mesh)
    loss_config = orpo_objective.ORPOLossConfig(model=setup.roles.policy.cfg, **loss)
    train, held_out = reference.comparison_pairs(setup, "orpo")
    summarise = functools.partial(orpo_objective.pair_metrics, prefix="eval/orpo/")
    method = reference.Method(
        name="orpo", loss_fn=orpo_objective.loss_fn, loss_config=loss_config,
        collate=functools.partial(collate_pairs, encoder=setup.encoder), reference="none",
        eval_rows=orpo_objective.eval_rows,
        eval_metrics=reference.pair_eval_metrics(summarise, "orpo", setup.evaluator.gold_fn), unit="pairs",
        summary={"odds_ratio_weight": loss_config.odds_ratio_weight,
                 "data_dir": comparison_source(config.data)[1] or "", "ranked_lists": bool(config.data.ranked_lists)})
    return reference.run(setup, workdir, method, train, held_out)
