"""`rlhfjax rm`: train a preference (reward) model on comparisons.

`rm.objective` = ranked | binary | imitation (Askell et al. 2021); `data.ranked_lists=True` trains
the ranked objective on ranked lists with Plackett–Luce. Every `train.eval_every` steps on the eval
pairs: accuracy, mean margin, ECE of σ(r_chosen − r_rejected) and, on the toy lab, agreement with
the gold reward's preference; the same metrics for the initial params go to `summary.json["init"]`
(for a PMP fine-tune: how well the pre-trained PM transfers before any target comparison). At the
end: a reliability diagram (`calibration.png`), the model as an HF sequence classifier in
`<workdir>/model` (ranked/binary, without the auxiliary LM head of `rm.lm_coef > 0`; an LM for
imitation), the final r_chosen − r_rejected of every eval pair (`eval_margins.npy`), and
`summary.json`. Imitation scores a response by its mean per-token log-likelihood. Runs on `config.mesh` (params, optimizer state, train and eval batches
sharded).

Preference-model pre-training (PMP) is a first `rm` run on generic comparisons whose `model/` is
the `model.init_from` of a second run on the target comparisons: `rlhfjax pmp` (recipes/pmp.py,
experiments/toylab_pmp.py) runs both.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import numpy as np

from rlhfjax import parallel
from rlhfjax.analysis.calibration import pairwise_predictions, plot_reliability, reliability
from rlhfjax.data.batching import BatchIterator, collate_pairs, collate_ranked
from rlhfjax.data.hh import load_hh, load_ranked
from rlhfjax.data.sources import ranked_source
from rlhfjax.models import api
from rlhfjax.models.heads import without_lm_head
from rlhfjax.models.hf import load_pretrained_scalar, save_pretrained, save_pretrained_scalar
from rlhfjax.objectives import rm as rm_objective
from rlhfjax.recipes import common


def _init_params(config, tokenizer, rng, mesh):
    """(loss config, PM params on `mesh`, their shardings): from an HF reward model, an HF/rlhfjax LM,
    or a fresh preset (a random LM's backbone and a zero head, created already sharded)."""
    loss_cfg = lambda model_cfg: rm_objective.RMLossConfig(  # noqa: E731
        model_cfg, objective=config.rm.objective, lm_coef=config.rm.lm_coef)
    init_from = config.model.init_from
    if init_from and config.rm.objective != "imitation" and config.rm.lm_coef == 0 and _is_scalar_checkpoint(init_from):
        model_cfg, host = load_pretrained_scalar(init_from, dtype=config.model.dtype)  # e.g. PMP stage 1
        shardings = api.param_shardings(model_cfg, mesh, "scalar")
        return loss_cfg(model_cfg), api.place(host, shardings), shardings
    model_cfg, lm_params, _ = common.model_params(config.model, len(tokenizer), rng, mesh, "lm")
    loss_config = loss_cfg(model_cfg)
    params = rm_objective.init_rm_params(loss_config, jax.random.fold_in(rng, 1), lm_params=lm_params)
    shardings = api.param_shardings(model_cfg, mesh, loss_config.model_kind)
    # The backbone is already laid out like this (same logical axes): only the new head moves.
    return loss_config, parallel.shard_like(params, shardings), shardings


def _is_scalar_checkpoint(path: str) -> bool:
    import json

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        return False
    with open(cfg_path) as f:
        return any(a.endswith("ForSequenceClassification") for a in json.load(f).get("architectures") or [])


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    """`run`, also returning the final TrainState (params still on the mesh)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = common.mesh_for(config, mesh)
    common.check_batch_size(config.train.batch_size, mesh, config.optim.grad_accum_steps)
    tokenizer = common.tokenizer_for(config)
    source, data_dir = common.resolve_source(config.data, "comparisons")
    if common.is_toylab(config.data) and not data_dir:
        data_dir = "mixed"  # annotator pool
    B = config.train.batch_size
    encoder = common.encoder_for(config, tokenizer)
    if config.data.ranked_lists:
        rsource, rdir = ranked_source(config.data)
        train_examples, report = load_ranked(rsource, data_dir=rdir, split=config.data.train_split,
                                             limit=config.data.limit or None)
        collate = functools.partial(collate_ranked, encoder=encoder, num_responses=config.data.num_responses)
    else:
        train_examples, report = load_hh(source, data_dir=data_dir, split=config.data.train_split,
                                         limit=config.data.limit or None)
        collate = functools.partial(collate_pairs, encoder=encoder)
    common.report_loading("rm train", report)
    eval_pairs, report = load_hh(source, data_dir=data_dir, split=config.data.eval_split,
                                 limit=config.data.eval_limit or None)
    common.report_loading("rm eval", report)

    train_iter = BatchIterator(train_examples, B, collate, seed=config.seed, num_epochs=None)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng = jax.random.split(rng)
    loss_config, params, shardings = _init_params(config, tokenizer, init_rng, mesh)
    state = common.create_state(params, shardings, config, state_rng, mesh)

    scores_step = jax.jit(lambda p, b: rm_objective.pair_scores(p, b, loss_config)[:2])
    eval_batches = [collate_pairs(eval_pairs[i:i + B] + [None] * max(0, i + B - len(eval_pairs)), encoder)
                    for i in range(0, len(eval_pairs), B)]
    gold_margin = None
    if common.is_toylab(config.data):
        from rlhfjax.data.toylab import gold_rewards

        prompts = [ex.prompt for ex in eval_pairs]
        gold_margin = (gold_rewards(prompts, [ex.chosen for ex in eval_pairs])
                       - gold_rewards(prompts, [ex.rejected for ex in eval_pairs]))
    last_eval: dict = {}

    def evaluate(state) -> dict:  # under the mesh (the loop runs it inside `fit`'s activation)
        margins = []
        for batch in eval_batches:
            r_c, r_r = scores_step(state.params, common.shard(batch, mesh))
            margins.append(np.asarray(r_c - r_r)[batch["row_mask_B"].astype(bool)])
        margin = np.concatenate(margins)
        rel = reliability(*pairwise_predictions(margin))
        metrics = {"eval/accuracy": float(np.mean((margin > 0) + 0.5 * (margin == 0))),
                   "eval/margin": float(margin.mean()), "eval/ece": rel.ece}
        if gold_margin is not None:
            decided = gold_margin != 0
            m = margin[decided]
            agree = (np.sign(m) == np.sign(gold_margin[decided])) + 0.5 * (m == 0)  # a tie is half right, as above
            metrics["eval/gold_agreement"] = float(agree.mean())
        last_eval.update(margin=margin, reliability=rel)
        return metrics

    with parallel.activate(mesh):
        init_eval = evaluate(state)  # the initial params (e.g. a PMP model's zero-shot transfer), before any resume
    state, history = common.fit(config, workdir, state, train_iter, rm_objective.loss_fn, loss_config,
                                mesh=mesh, eval_fn=evaluate)

    if not history or "eval/accuracy" not in history[-1]:  # nothing left to train (resumed at the end)
        with parallel.activate(mesh):
            history.append({"step": int(jax.device_get(state.step)), **evaluate(state)})
    np.save(os.path.join(workdir, "eval_margins.npy"), last_eval["margin"])  # per eval pair, for paired comparisons
    plot_reliability(last_eval["reliability"], os.path.join(workdir, "calibration.png"),
                     title=f"PM calibration ({config.rm.objective})")
    model_cfg = loss_config.model.replace(pad_token_id=encoder.pad_id, eos_token_id=tokenizer.eos_token_id,
                                          bos_token_id=tokenizer.bos_token_id)
    model_dir = os.path.join(workdir, "model")
    if config.rm.objective == "imitation":
        save_pretrained(model_cfg, state.params, model_dir, tokenizer=tokenizer)
    else:  # with rm.lm_coef > 0 the auxiliary LM head is dropped: the export is the reward model
        params = without_lm_head(state.params) if config.rm.lm_coef > 0 else state.params
        save_pretrained_scalar(model_cfg, params, model_dir, tokenizer=tokenizer, drop_bias=True)
    final = dict(history[-1])
    summary = {"objective": config.rm.objective, "steps": config.train.steps, "final": final, "init": init_eval,
               "init_from": config.model.init_from, "data_dir": data_dir or "",
               "train_examples": len(train_examples), "eval_pairs": len(eval_pairs),
               "seconds": round(time.time() - t0, 1), "model_dir": model_dir}
    common.write_json(os.path.join(workdir, "summary.json"), summary)
    return summary, state
