"""`rlhfjax pmp`: preference-model pre-training then fine-tuning (Askell et al. 2021 §4), two `rm` runs.

    <workdir>/pretrain   stage 1: the `rm` recipe on `pretrain.data_dir` (generic comparisons) from
                         `model.init_from` (an LM)
    <workdir>/finetune   stage 2: the `rm` recipe on `data.data_dir` (the target pool) from
                         `<workdir>/pretrain/model`

The config is a stage-2 `rm` config plus a `pretrain` block (experiments/toylab_pmp.py). A stage whose
`summary.json` exists was finished and is skipped on a re-run; an interrupted stage resumes from its
checkpoints. A stage directory written with a different config is an error, never silently reused.
Both stages run on `config.mesh` like any `rm` run.
"""

from __future__ import annotations

import json
import os

import ml_collections

from rlhfjax.errors import ConfigError
from rlhfjax import commands
from rlhfjax.train.metrics import write_json

SCALAR_OBJECTIVES = ("ranked", "binary")  # exported as a sequence classifier; "imitation" exports an LM


def stage_configs(config, workdir: str) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(stage-1 config, stage-2 config): plain `rm` configs (no `pretrain` block), locked."""
    pre, ft_obj = config.pretrain, config.rm.objective
    if (pre.objective in SCALAR_OBJECTIVES) != (ft_obj in SCALAR_OBJECTIVES):
        raise ConfigError(f"pretrain.objective={pre.objective!r} exports a "
                         f"{'scalar PM' if pre.objective in SCALAR_OBJECTIVES else 'language model'}, which "
                         f"rm.objective={ft_obj!r} cannot start from; pre-train ranked/binary for a ranked/binary "
                         "fine-tune and imitation for imitation")
    if config.rm.lm_coef != 0:
        raise ConfigError("rm.lm_coef must be 0 for PMP: a PM trained with an LM head is not exported")
    base = config.to_dict()
    del base["pretrain"]
    stage1 = ml_collections.ConfigDict(base)
    stage1.data.data_dir = pre.data_dir
    stage1.data.limit = pre.limit
    stage1.data.ranked_lists = False
    stage1.rm.objective = pre.objective
    stage1.train.steps = pre.steps
    stage1.train.batch_size = pre.batch_size
    stage1.train.eval_every = stage1.train.save_every = pre.eval_every
    stage1.train.log_every = max(1, pre.eval_every // 4)
    stage1.optim.learning_rate = pre.learning_rate
    stage1.optim.total_steps = 0  # = pretrain.steps
    stage2 = ml_collections.ConfigDict(base)
    stage2.model.init_from = os.path.join(workdir, "pretrain", "model")
    stage1.lock()
    stage2.lock()
    return stage1, stage2


def _saved_config(stage_dir: str) -> dict | None:
    path = os.path.join(stage_dir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} -> {y!r}")
    return out


def run_stage(name: str, config, stage_dir: str, mesh=None) -> tuple[dict, bool]:
    """One `rm` run into `stage_dir` (on `mesh`, default `config.mesh`) → (its summary, whether it was
    skipped as already finished)."""
    wanted = json.loads(json.dumps(config.to_dict(), default=str))  # as config.json stores it
    saved = _saved_config(stage_dir)
    if saved is not None and saved != wanted:
        diff = "; ".join(_differences(saved, wanted))
        raise ConfigError(f"{stage_dir} holds a {name} stage run with another config ({diff}); "
                         "use a fresh --workdir")
    summary_path = os.path.join(stage_dir, "summary.json")
    if saved is not None and os.path.exists(summary_path):
        print(f"pmp {name}: finished in {stage_dir}; skipping", flush=True)
        with open(summary_path) as f:
            return json.load(f), True
    print(f"pmp {name}: run directory {stage_dir}", flush=True)  # the rm run's loop writes its config.json
    return commands.get("rm").run(config, stage_dir, mesh), False


def run(config, workdir: str, mesh=None) -> dict:
    """Both stages on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    stage1, stage2 = stage_configs(config, workdir)
    summaries, skipped = {}, []
    for name, cfg in (("pretrain", stage1), ("finetune", stage2)):
        summaries[name], was_skipped = run_stage(name, cfg, os.path.join(workdir, name), mesh=mesh)
        if was_skipped:
            skipped.append(name)
    ft = summaries["finetune"]
    summary = {**summaries, "skipped": skipped,
               "transfer": {"before_finetune": ft["init"], "after_finetune": ft["final"]}}
    write_json(os.path.join(workdir, "summary.json"), summary)
    print(f"pmp: target-pool accuracy {ft['init']['eval/accuracy']:.3f} after pre-training, "
          f"{ft['final']['eval/accuracy']:.3f} after fine-tuning", flush=True)
    return summary
