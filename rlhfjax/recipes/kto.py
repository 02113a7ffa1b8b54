"""`rlhfjax kto`: KTO (objectives/kto.py) of an SFT policy on unpaired desirable / undesirable examples against its
frozen initial self, on the offline harness as `rlhfjax dpo` (`offline.reference`: the reference column, held-out
sampling evals, the proxy reward's normaliser, resume, export, summary).

Data (`kto.data`):
- "pairs": each comparison `rlhfjax dpo` reads (`data.preferences.load_comparisons`: the toy lab's annotator pools,
  HH-RLHF from the hub or files, ranked lists) split into a desirable (chosen) and an undesirable (rejected) example;
- "gold_threshold" (toy lab only): the demonstrator's samples (the SFT data), desirable when their gold reward is at
  least the `kto.gold_quantile` quantile of the train samples' gold rewards (that one threshold for both splits).
Examples whose response keeps no token after truncation are skipped and counted (`summary.json["skipped"]`). Each
example gets another's completion y' for z₀ by a seeded derangement fixed once per dataset (`usable_unpaired`), so
the reference's log-probs of (x, y) and (x, y') are one column, computed once and stored with the run
(`kto.reference_on_the_fly`: every step instead). A one-line warning is printed when the train examples'
λ_D n_D / (λ_U n_U) is outside [1, 4/3] (Ethayarajh et al. 2024, §4.2).

Evals (step 0 = the SFT policy, every `train.eval_every` steps, the last): `eval/kto/*` on the held-out examples
(objectives/kto.py; z₀ over the whole held-out set), on the toy lab `eval/kto/gold_agreement` (how often r orders
two held-out responses to the same prompt as the gold reward does: `reference.prompt_gold_agreement`), and the
shared sampling eval (gold, KL, the proxy with an RM). Training records log `kto/*`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from rlhfjax.data.hh import load_sft
from rlhfjax.data.preferences import load_comparisons
from rlhfjax.data.sources import is_toylab
from rlhfjax.errors import ConfigError
from rlhfjax.objectives import kto as kto_objective
from rlhfjax.offline import reference
from rlhfjax.offline.reference import Unpaired


def unpaired(config, split: str, limit: int, name: str, gold_fn, threshold=None) -> tuple[list, float | None]:
    """`kto.data`'s `Unpaired` examples of `split` and the gold threshold (None for pairs; given, or else the
    `kto.gold_quantile` quantile of these examples' gold rewards)."""
    if config.kto.data == "pairs":
        return [Unpaired(p.prompt, y, good) for p in load_comparisons(config, split, limit, name)
                for y, good in ((p.chosen, True), (p.rejected, False))], None
    demos, report = load_sft(os.path.join(config.data.toylab_dir, "sft"), split=split, limit=limit or None)
    report.print(f"{name} (demonstrations)")
    gold = gold_fn([d.prompt for d in demos], [d.response for d in demos])
    threshold = float(np.quantile(gold, config.kto.gold_quantile)) if threshold is None else threshold
    return [Unpaired(d.prompt, d.response, bool(g >= threshold)) for d, g in zip(demos, gold)], threshold


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    k, data = config.kto, config.data
    loss_config = kto_objective.KTOLossConfig(  # bad values fail here, before anything loads
        model=None, beta=float(k.beta), desirable_weight=float(k.desirable_weight),
        undesirable_weight=float(k.undesirable_weight), reference_on_the_fly=bool(k.reference_on_the_fly))
    if k.data == "gold_threshold" and not is_toylab(data):
        raise ConfigError("kto.data='gold_threshold' needs the toy lab's gold reward (data.source=toylab)",
                          "use --config.kto.data=pairs")
    setup = reference.prepare(config, mesh)
    loss_config, gold_fn = dataclasses.replace(loss_config, model=setup.roles.policy.cfg), setup.evaluator.gold_fn
    train, threshold = unpaired(config, data.train_split, data.limit, "kto train", gold_fn)
    held_out, _ = unpaired(config, data.eval_split, data.eval_limit, "kto eval", gold_fn, threshold)
    train, held_out = (reference.usable_unpaired(ex, setup.encoder, f"kto {name}", config.seed)
                       for ex, name in ((train, "train"), (held_out, "eval")))
    n_desirable = sum(u.desirable for u in train.items)
    warning = kto_objective.balance_warning(n_desirable, len(train.items) - n_desirable, loss_config)
    if warning:
        print(f"kto: warning: {warning}", flush=True)

    def eval_metrics(rows: dict, items: list) -> dict:
        metrics = {m: float(v) for m, v in kto_objective.summarise(rows, loss_config, "eval/kto/")[1].items()}
        if gold_fn is not None:
            metrics["eval/kto/gold_agreement"] = reference.prompt_gold_agreement(rows["reward_B"], rows["valid_B"],
                                                                                items, gold_fn)
        return metrics

    method = reference.Method(
        name="kto", loss_fn=kto_objective.loss_fn, loss_config=loss_config,
        collate=functools.partial(reference.collate_unpaired, encoder=setup.encoder),
        reference="on_the_fly" if loss_config.reference_on_the_fly else "column",
        reference_fn=kto_objective.reference_column, reference_batch_size=k.reference_batch_size,
        eval_rows=kto_objective.example_terms, eval_metrics=eval_metrics, unit="examples",
        summary={"data": k.data, "beta": k.beta, "desirable_weight": k.desirable_weight,
                 "undesirable_weight": k.undesirable_weight, "train_desirable": n_desirable,
                 "gold_threshold": threshold})
    return reference.run(setup, workdir, method, train, held_out)[0]
