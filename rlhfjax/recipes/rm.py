"""`rlhfjax rm`: train a preference (reward) model on comparisons.

`rm.objective` = ranked | binary | imitation (Askell et al. 2021); `data.ranked_lists=True` trains
the ranked objective on ranked lists with Plackett–Luce. Every `train.eval_every` steps on the eval
pairs: accuracy, mean margin, ECE of σ(r_chosen − r_rejected) and, on the toy lab, agreement with
the gold reward's preference; the same metrics for the initial params go to `summary.json["init"]`
(for a PMP fine-tune: how well the pre-trained PM transfers before any target comparison). At the
end: a reliability diagram (`calibration.png`), the model as an HF sequence classifier in
`<workdir>/model` (ranked/binary, without the auxiliary LM head of `rm.lm_coef > 0`; an LM for
imitation), the final r_chosen − r_rejected of every eval pair (`eval_margins.npy`), and
`summary.json`. Imitation scores a response by its mean per-token log-likelihood. Runs on `config.mesh`
(params, optimizer state, train and eval batches sharded).

Fine-tuning options (all off by default; the run is then steps-based on every training pair):
- `train.epochs` > 0: that many passes over the training pairs instead of `train.steps` (every pair
  exactly once per epoch, the last batch padded with masked rows); evals run at every epoch's end;
  `summary.json["steps"]` is the resolved step count (config.json is rewritten to the config as given
  when the run ends, so `pmp`'s re-run check sees what was asked for).
- `rm.val_fraction` > 0: a fixed random subset of the training pairs (drawn from `seed`) is held out for
  validation: at every eval, `val/loss` (the objective's own loss) and `val/accuracy`. The params with
  the best `rm.select_by` metric, the initial params included (step 0), are kept on device and in
  `<workdir>/best` (so a resumed run knows the best so far and its step) and are what the run exports
  and returns; `summary.json["final"]` then describes that model, `["best_step"]` its step and
  `["last"]` the last step's record. The eval pairs are then scored every `train.eval_every` steps
  (0: only the initial and the exported model), whatever the validation period.
- `rm.freeze_backbone_steps` = k > 0 (ranked/binary): only the scalar head trains for the first k
  updates, so a fresh head is fitted before the backbone moves (`train.optim.freeze_for`).

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

from rlhfjax import distributed, parallel
from rlhfjax.analysis.calibration import pair_metrics, pairwise_predictions, plot_reliability, reliability
from rlhfjax.data.batching import collate_pairs, collate_ranked, padded_batches
from rlhfjax.errors import ConfigError
from rlhfjax.models import api
from rlhfjax.models.factory import execution
from rlhfjax.models.heads import without_lm_head
from rlhfjax.models.hf import load_hf_config, load_pretrained_scalar, save_pretrained, save_pretrained_scalar
from rlhfjax.objectives import rm as rm_objective
from rlhfjax.data.preferences import comparison_source, load_comparisons
from rlhfjax.data.sources import is_toylab
from rlhfjax.data.tokenizing import encoder_for, tokenizer_for
from rlhfjax.offline import runner
from rlhfjax.train.metrics import write_json
from rlhfjax.train import early_stopping
from rlhfjax.train.metrics import write_config
from rlhfjax.train.state import create_on_mesh

SELECT_BY = {"loss": ("val/loss", min), "accuracy": ("val/accuracy", max)}  # early-stopping metric, direction


def _init_params(config, tokenizer, rng, mesh):
    """(loss config, PM params on `mesh`, their shardings): from an HF reward model, an HF/rlhfjax LM,
    or a fresh preset (a random LM's backbone and a zero head, created already sharded)."""
    loss_cfg = lambda model_cfg: rm_objective.RMLossConfig(  # noqa: E731
        model_cfg, objective=config.rm.objective, lm_coef=config.rm.lm_coef)
    init_from = config.model.init_from
    if init_from and config.rm.objective != "imitation" and config.rm.lm_coef == 0 and _is_scalar_checkpoint(init_from):
        model_cfg, host = load_pretrained_scalar(init_from, **execution(config.model))  # e.g. PMP stage 1
        shardings = api.param_shardings(model_cfg, mesh, "scalar")
        return loss_cfg(model_cfg), api.place(host, shardings), shardings
    model_cfg, lm_params, _ = runner.model_params(config.model, len(tokenizer), rng, mesh, "lm")
    loss_config = loss_cfg(model_cfg)
    params = rm_objective.init_rm_params(loss_config, jax.random.fold_in(rng, 1), lm_params=lm_params)
    shardings = api.param_shardings(model_cfg, mesh, loss_config.model_kind)
    # The backbone is already laid out like this (same logical axes): only the new head moves.
    return loss_config, parallel.shard_like(params, shardings), shardings


def _is_scalar_checkpoint(path: str) -> bool:
    if not os.path.isfile(os.path.join(path, "config.json")):
        return False
    _, hf_config = load_hf_config(path)  # a broken config.json: the loader's own one-line error
    return any(a.endswith("ForSequenceClassification") for a in hf_config.architectures or [])


# One jitted function per loss config (hashable): runs in one process (sweeps, tests) reuse the compiled code.
@functools.lru_cache(maxsize=16)
def _scores_step(loss_config):
    return jax.jit(lambda params, batch: rm_objective.pair_scores(params, batch, loss_config))


@functools.lru_cache(maxsize=16)
def _validation_step(loss_config):
    return jax.jit(functools.partial(_validation_sums, loss_config=loss_config))


def _validation_sums(params, batch, loss_config):
    """(loss total, loss count, correct rows, rows) of one validation batch: the training objective itself."""
    total, count, metrics = rm_objective.loss_fn(params, batch, frozen=None, config=loss_config, rng=None)
    rows = batch["row_mask_B"].sum()
    accuracy = metrics["rm/top1_accuracy"] if "rm/top1_accuracy" in metrics else metrics["rm/accuracy"]
    return total, count, accuracy * rows, rows


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    return run_with_state(config, workdir, mesh)[0]


def run_with_state(config, workdir: str, mesh=None):
    """`run`, also returning the final TrainState (params still on the mesh)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = runner.mesh_for(config, mesh)
    runner.check_batch_size(config.train.batch_size, mesh, config.optim.grad_accum_steps)
    tokenizer = tokenizer_for(config, config.model.init_from)
    B = config.train.batch_size
    encoder = encoder_for(config, tokenizer)
    ranked = bool(config.data.ranked_lists)
    train_examples = load_comparisons(config, config.data.train_split, config.data.limit, "rm train",
                                             whole_lists=ranked)
    collate = (functools.partial(collate_ranked, encoder=encoder, num_responses=config.data.num_responses)
               if ranked else functools.partial(collate_pairs, encoder=encoder))
    eval_pairs = load_comparisons(config, config.data.eval_split, config.data.eval_limit, "rm eval")

    given_config = config
    val_fraction = float(config.rm.val_fraction)
    val_examples = []
    if val_fraction > 0:
        train_examples, val_examples = runner.split_validation(train_examples, val_fraction, config.seed)
    train_iter = runner.train_iterator(config, train_examples, collate)
    config = runner.resolve_epochs(config, len(train_iter))
    freeze_steps = int(config.rm.freeze_backbone_steps)
    if freeze_steps > 0 and config.rm.objective == "imitation":
        raise ConfigError("rm.freeze_backbone_steps needs a scalar head to train alone; imitation has none")
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng = jax.random.split(rng)
    loss_config, params, shardings = _init_params(config, tokenizer, init_rng, mesh)
    if freeze_steps > 0:
        optim = runner.optim_config(config)
        optim.freeze_steps, optim.frozen = freeze_steps, "backbone"  # a copy: the run's config is unchanged
        state = create_on_mesh(params, shardings, optim, state_rng, mesh)
    else:
        state = runner.create_state(params, shardings, config, state_rng, mesh)

    scores_step = _scores_step(loss_config)
    eval_batches = [collate_pairs(rows, encoder) for _, rows, _ in padded_batches(eval_pairs, B)]
    gold_margin = None
    if is_toylab(config.data):
        from rlhfjax.data.toylab import gold_margins

        gold_margin = gold_margins(eval_pairs)
    last_eval: dict = {}

    def evaluate(state) -> dict:  # under the mesh (the loop runs it inside `fit`'s activation)
        margins = []
        for batch in eval_batches:
            r_c, r_r = scores_step(state.params, runner.shard(batch, mesh))
            margins.append(np.asarray(r_c - r_r)[batch["row_mask_B"].astype(bool)])
        margin = np.concatenate(margins)
        rel = reliability(*pairwise_predictions(margin))
        metrics = {f"eval/{k}": v for k, v in pair_metrics(margin, gold_margin).items()}
        metrics.update({"eval/margin": float(margin.mean()), "eval/ece": rel.ece})
        last_eval.update(margin=margin, reliability=rel)
        return metrics

    best = None
    if val_examples:
        metric, better = SELECT_BY.get(config.rm.select_by, (None, None))
        if metric is None:
            raise ConfigError(f"rm.select_by must be one of {sorted(SELECT_BY)}, got {config.rm.select_by!r}")
        val_step = _validation_step(loss_config)
        val_batches = [collate(rows) for _, rows, _ in padded_batches(val_examples, B)]
        best = early_stopping.BestParams(os.path.join(workdir, "best"), metric, better)
        best.restore(state.params)

    def validate(params) -> dict:
        sums = np.zeros(4)
        for batch in val_batches:
            sums += np.asarray(jax.device_get(val_step(params, runner.shard(batch, mesh))), np.float64)
        return {"val/loss": float(sums[0] / max(sums[1], 1.0)), "val/accuracy": float(sums[2] / max(sums[3], 1.0))}

    test_every = int(given_config.train.eval_every or 0)

    def evaluate_and_select(state) -> dict:
        if best is None:
            return evaluate(state)
        step = int(jax.device_get(state.step))
        # With a validation split the eval pairs only describe: every `train.eval_every` steps (0: never)
        # besides the initial and the exported model, so epoch-wise validation costs no test passes.
        metrics = evaluate(state) if test_every and step % test_every == 0 else {}
        val = validate(state.params)
        best.offer(step, val, state.params)
        return {**metrics, **val}

    with parallel.activate(mesh):
        init_eval = evaluate(state)  # the initial params (e.g. a PMP model's zero-shot transfer), before any resume
        if best is not None:
            val = validate(state.params)
            init_eval.update(val)
            best.offer(0, val, state.params)  # never worse on validation than the start (a no-op on resume)
    try:
        state, history = runner.fit(config, workdir, state, train_iter, rm_objective.loss_fn, loss_config,
                                    mesh=mesh, eval_fn=evaluate_and_select)
    finally:
        if best is not None:
            best.close()
    if config is not given_config:  # epochs resolved into steps: record the config as given (pmp compares it)
        write_config(workdir, given_config.to_dict())

    if best is not None:  # export, return and report the selected params
        last = dict(history[-1]) if history else {}
        state = state.replace(params=best.params)
        with parallel.activate(mesh):
            history.append({"step": best.step, **best.metrics, **evaluate(state)})
    elif not history or "eval/accuracy" not in history[-1]:  # nothing left to train (resumed at the end)
        with parallel.activate(mesh):
            history.append({"step": int(jax.device_get(state.step)), **evaluate(state)})
    if distributed.is_primary():
        np.save(os.path.join(workdir, "eval_margins.npy"), last_eval["margin"])  # per eval pair, for paired tests
        plot_reliability(last_eval["reliability"], os.path.join(workdir, "calibration.png"),
                         title=f"PM calibration ({config.rm.objective})")
    model_cfg = loss_config.model.replace(pad_token_id=encoder.pad_id, eos_token_id=tokenizer.eos_token_id,
                                          bos_token_id=tokenizer.bos_token_id)
    model_dir = os.path.join(workdir, "model")
    if config.rm.objective == "imitation":
        distributed.export(save_pretrained, model_cfg, state.params, model_dir, tokenizer=tokenizer)
    else:  # with rm.lm_coef > 0 the auxiliary LM head is dropped: the export is the reward model
        params = without_lm_head(state.params) if config.rm.lm_coef > 0 else state.params
        distributed.export(save_pretrained_scalar, model_cfg, params, model_dir, tokenizer=tokenizer, drop_bias=True)
    final = dict(history[-1])
    summary = {"objective": config.rm.objective, "steps": config.train.steps, "final": final, "init": init_eval,
               "init_from": config.model.init_from, "data_dir": comparison_source(config.data)[1] or "",
               "train_examples": len(train_examples), "eval_pairs": len(eval_pairs),
               "seconds": round(time.time() - t0, 1), "model_dir": model_dir}
    if config.train.epochs:
        summary["epochs"] = int(config.train.epochs)
    if best is not None:
        summary.update(best_step=best.step, select_by=best.metric, val_examples=len(val_examples), last=last)
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary, state
