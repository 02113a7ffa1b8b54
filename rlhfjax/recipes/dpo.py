"""`rlhfjax dpo`: direct preference optimisation (DPO, IPO, conservative DPO) of an SFT policy on comparisons.

The loss is `objectives.dpo.loss_fn` (`dpo.loss` = dpo | ipo | cdpo) against the frozen reference π_ref = the
initial policy (`policy.init_from`), run by the offline harness for methods with a reference
(`offline.reference`: the reference column, held-out sampling evals, the proxy reward's normaliser, resume,
export and summary; see there).

Data: any comparisons the `rm` recipe reads (`data.preferences.load_comparisons`): the toy lab's annotator pools
(`data.data_dir`), HH-RLHF from the hub or local files, or ranked lists (`data.ranked_lists`: every pair i < j of
a list best → worst). Pairs that cannot teach anything after tokenization — a response with no token left, or
chosen and rejected identical once truncated — are skipped, counted by reason and reported
(`summary.json["skipped"]`), never a crash.

Reference: by default its summed response log-probs per pair are computed once before training and stored in
`<workdir>/reference_logps.npz` (reused on resume); `dpo.reference_on_the_fly=True` keeps the reference on the
device and computes them in every step instead (one more forward per step, no column).

Every `train.eval_every` steps, the last step, and (fresh runs, `eval.at_start`) step 0 = the SFT policy:
- on the eval pairs: `eval/dpo/{loss,accuracy,margin,reward_chosen,reward_rejected,logp_drift_chosen,
  logp_drift_rejected,logp_chosen,logp_rejected}` (objectives/dpo.py), and on the toy lab
  `eval/dpo/gold_agreement` (the implicit reward's margin against the gold reward's preference);
- the shared held-out sampling eval: `eval/kl/seq_mean` to the reference, `eval/reward/gold` (toy lab),
  `eval/reward/proxy` when `reward.init_from` names an RM (normalised like PPO's: mean 0, std 1 under the initial
  policy on training prompts), response length, similarity and diversity; samples go to `samples.jsonl`.
So a DPO run lands on the same reward vs √KL axes as the online methods. Training records log the same `dpo/*`
metrics on each batch.
"""

from __future__ import annotations

import functools

from rlhfjax.data.batching import collate_pairs
from rlhfjax.data.preferences import comparison_source, load_comparisons
from rlhfjax.objectives import dpo as dpo_objective
from rlhfjax.offline import reference


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    """`run`, also returning the final state (`harness.state.PolicyState`, params still on the mesh)."""
    d = config.dpo
    loss = dict(loss=d.loss, beta=float(d.beta), label_smoothing=float(d.label_smoothing),
                reference_on_the_fly=bool(d.reference_on_the_fly), ipo_normalise=d.ipo_normalise)
    dpo_objective.DPOLossConfig(model=None, **loss)  # a bad combination fails here, before anything loads
    setup = reference.prepare(config, mesh)
    loss_config = dpo_objective.DPOLossConfig(model=setup.roles.policy.cfg, **loss)
    data = config.data
    train, held_out = (reference.usable_pairs(load_comparisons(config, split, limit, f"dpo {name}"), setup.encoder,
                                              f"dpo {name}")
                       for name, split, limit in (("train", data.train_split, data.limit),
                                                  ("eval", data.eval_split, data.eval_limit)))
    gold_fn = setup.evaluator.gold_fn

    def eval_metrics(rows: dict, pairs: list) -> dict:
        metrics = {k: float(v) for k, v in dpo_objective.pair_metrics(rows, rows["loss_B"], loss_config,
                                                                       prefix="eval/dpo/").items()}
        if gold_fn is not None:
            metrics["eval/dpo/gold_agreement"] = reference.pair_gold_agreement(rows["delta_B"], rows["valid_B"], pairs,
                                                                              gold_fn)
        return metrics

    method = reference.Method(
        name="dpo", loss_fn=dpo_objective.loss_fn, loss_config=loss_config,
        collate=functools.partial(collate_pairs, encoder=setup.encoder),
        reference="on_the_fly" if loss_config.reference_on_the_fly else "column",
        reference_fn=dpo_objective.reference_column, reference_batch_size=d.reference_batch_size,
        eval_rows=dpo_objective.eval_rows, eval_metrics=eval_metrics, unit="pairs",
        summary={"loss": d.loss, "beta": loss_config.beta, "label_smoothing": loss_config.label_smoothing,
                 "ipo_normalise": d.ipo_normalise,
                 "data_dir": comparison_source(data)[1] or "", "ranked_lists": bool(data.ranked_lists)})
    return reference.run(setup, workdir, method, train, held_out)
