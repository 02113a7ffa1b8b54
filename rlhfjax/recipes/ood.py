"""`rlhfjax ood`: out-of-distribution detection on a model's prompt activations (Bai et al. 2022 §5.4).

Loads any model directory or hub id in `model.init_from` — a causal LM (rlhfjax/HF `*ForCausalLM`)
or a reward/preference model (`*ForSequenceClassification`, detected from config.json
`architectures`); empty = a random init of the `model` preset (smoke tests only). For each layer in
`ood.layer` ("middle" | "all" | "0,1,-1"; -1 = final-norm output) it reads the activation at each
prompt's last token (left-padded batches of fixed shape, one jitted function for all layers), fits
a Gaussian on the in-distribution *fit* prompts and scores held-out in-distribution *test* prompts
against *OOD* prompts by Mahalanobis and simplified relative Mahalanobis distance. Activations come
from `models.api.activations`, with the params and prompt batches on `config.mesh`.

Writes to the run directory: `summary.json` (AUROC per layer and score, best layer), `metrics.jsonl`
and `tb/` (one record at step 0: `auroc/<score>/layer<L>`, `auroc_novel_test/<score>/layer<L>`),
`scores.npz` (every score) and `ood_hist.png` (score histograms at the best layer). Templated prompts
can repeat across splits, so each score also gets `auroc_novel_test`: only test prompts absent from the
fit set.

Prompt sources: on the toy lab (`data.source="toylab"`) the defaults are prompts/train (fit),
prompts/test (in-distribution) and prompts/ood (held-out topics). Otherwise set
`ood.{fit,test,ood}_source` (+ `_data_dir`, `_split`) to anything `rlhfjax.data.hh.load_prompts`
reads; fit/test default to `data.source`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from rlhfjax import distributed, parallel
from rlhfjax.analysis.ood import (auroc, collect_activations, make_activation_fn, ood_report, plot_score_histograms,
                                  resolve_layers)
from rlhfjax.data.hh import load_prompts
from rlhfjax.errors import ConfigError
from rlhfjax.models import api
from rlhfjax.models.factory import preset_from_config
from rlhfjax.data.sources import is_toylab, resolve_source
from rlhfjax.data.tokenizing import encoder_for, tokenizer_for
from rlhfjax.offline import runner
from rlhfjax.train.metrics import write_json
from rlhfjax.train.metrics import MetricsWriter

SCORE_NAMES = ("mahalanobis", "relative_mahalanobis")


def load_model(config, vocab_size: int, rng, mesh):
    """(kind, ModelConfig, params on `mesh`, scalar_model) for `config.model`: kind is "reward_model",
    "causal_lm" or "random_init". An LM's head is dropped (activations never need it)."""
    from rlhfjax.models.hf import load_hf_config, load_pretrained, load_pretrained_scalar

    init_from = config.model.init_from
    dtype = config.model.dtype
    if init_from:
        _, hf = load_hf_config(init_from)
        archs = list(getattr(hf, "architectures", None) or [])
        if any(a.endswith("ForSequenceClassification") for a in archs):
            cfg, params = load_pretrained_scalar(init_from, dtype=dtype)
            return "reward_model", cfg, api.place(params, api.param_shardings(cfg, mesh, "scalar")), True
        cfg, params = load_pretrained(init_from, dtype=dtype)
    else:  # smoke tests
        cfg = preset_from_config(config.model, vocab_size)
        params, _ = api.init_sharded(cfg, rng, mesh, "lm")
        return "random_init", cfg, {k: v for k, v in params.items() if k != "lm_head"}, False
    params = {k: v for k, v in params.items() if k != "lm_head"}
    shardings = api.param_shardings(cfg, mesh, "lm")
    return "causal_lm", cfg, api.place(params, {k: shardings[k] for k in params}), False


def _sources(config) -> dict[str, tuple[str, str | None, str, int]]:
    """{"fit"|"test"|"ood": (source, data_dir, split, limit)}."""
    o = config.ood
    toylab = is_toylab(config.data)
    if toylab:
        prompts_dir, _ = resolve_source(config.data, "prompts")
    out = {}
    for role in ("fit", "test", "ood"):
        source = o[f"{role}_source"]
        if not source:
            if toylab:
                source = prompts_dir
            elif role == "ood":
                raise ConfigError("set ood.ood_source (the OOD prompts) when data.source is not the toy lab")
            else:
                source = config.data.source
        data_dir = o[f"{role}_data_dir"] or (None if toylab or o[f"{role}_source"] else config.data.data_dir or None)
        out[role] = (source, data_dir, o[f"{role}_split"], o[f"{role}_limit"])
    return out


def run(config, workdir: str, mesh=None) -> dict:
    """Read activations on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = runner.mesh_for(config, mesh)
    runner.check_batch_size(config.ood.batch_size, mesh, what="ood.batch_size")
    tokenizer = tokenizer_for(config, config.model.init_from)
    encoder = encoder_for(config, tokenizer)

    prompts, reports = {}, {}
    for role, (source, data_dir, split, limit) in _sources(config).items():
        examples, report = load_prompts(source, data_dir=data_dir, split=split, limit=limit or None)
        report.print(f"ood {role}")
        prompts[role] = examples
        reports[role] = {"source": source, "data_dir": data_dir, "split": split, "prompts": len(examples)}
    if len(prompts["fit"]) < 2 or not prompts["test"] or not prompts["ood"]:
        raise ConfigError(f"need >= 2 fit prompts and some test and OOD prompts, got "
                         f"{ {k: len(v) for k, v in prompts.items()} }")

    kind, model_cfg, params, scalar_model = load_model(config, len(tokenizer), jax.random.PRNGKey(config.seed), mesh)
    if model_cfg.vocab_size < len(tokenizer):
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{model_cfg.vocab_size}: pass the model's tokenizer via tokenizer.path")
    layers = resolve_layers(config.ood.layer, model_cfg.num_layers)
    print(f"ood: {kind} ({model_cfg.family}, {model_cfg.num_layers} layers, hidden {model_cfg.hidden_size}); "
          f"layers {list(layers)}; prompts fit/test/ood = {len(prompts['fit'])}/{len(prompts['test'])}/"
          f"{len(prompts['ood'])}", flush=True)
    act_fn = make_activation_fn(model_cfg, layers, scalar_model=scalar_model)
    with parallel.activate(mesh):
        feats = {role: collect_activations(act_fn, params, ex, encoder, config.ood.batch_size, mesh=mesh)
                 for role, ex in prompts.items()}

    # Templated prompts repeat across splits; also score only the test prompts absent from the fit set.
    fit_set = {ex.prompt for ex in prompts["fit"]}
    novel = np.array([ex.prompt not in fit_set for ex in prompts["test"]])
    per_layer, all_scores = {}, {}
    for layer in layers:
        metrics, scores = ood_report(feats["fit"][layer], feats["test"][layer], feats["ood"][layer],
                                     shrinkage=config.ood.shrinkage)
        if novel.any():
            for name, (s_in, s_out) in scores.items():
                metrics[name]["auroc_novel_test"] = auroc(s_in[novel], s_out)
        per_layer[str(layer)] = metrics
        all_scores[layer] = scores
        print(f"ood: layer {layer:>3}: AUROC mahalanobis {metrics['mahalanobis']['auroc']:.3f}  "
              f"relative {metrics['relative_mahalanobis']['auroc']:.3f}", flush=True)
    # Logged like every command's metrics (one record, step 0: there are no training steps). A rerun
    # recomputes everything, so it replaces the earlier record (resume_step=-1 keeps no line).
    writer = MetricsWriter(workdir, resume_step=-1)
    writer.write(0, {f"{key}/{name}/layer{layer}": per_layer[str(layer)][name][key]
                     for layer in layers for name in SCORE_NAMES for key in ("auroc", "auroc_novel_test")
                     if key in per_layer[str(layer)][name]})
    writer.close()
    best_layer, best_score = max(((layer, name) for layer in layers for name in SCORE_NAMES),
                                 key=lambda ls: per_layer[str(ls[0])][ls[1]]["auroc"])
    hist = None
    if distributed.is_primary():
        hist = plot_score_histograms(all_scores[best_layer], os.path.join(workdir, "ood_hist.png"),
                                     title=f"OOD scores, layer {best_layer} ({kind})")
        np.savez(os.path.join(workdir, "scores.npz"),
                 **{f"layer{layer}_{name}_{part}": s for layer, sc in all_scores.items()
                    for name, pair in sc.items() for part, s in zip(("in", "ood"), pair)})

    summary = {
        "model": config.model.init_from or "random init", "model_kind": kind,
        "num_layers": model_cfg.num_layers, "hidden_size": model_cfg.hidden_size,
        "layers": {str(layer): per_layer[str(layer)] for layer in layers},
        "auroc": {str(layer): {n: per_layer[str(layer)][n]["auroc"] for n in SCORE_NAMES} for layer in layers},
        "best": {"layer": best_layer, "score": best_score, "auroc": per_layer[str(best_layer)][best_score]["auroc"]},
        "prompts": reports,
        "test_prompts_also_in_fit": int((~novel).sum()),
        "prompt_truncations": dict(encoder.stats), "shrinkage": config.ood.shrinkage,
        "histogram": hist, "seconds": round(time.time() - t0, 1),
    }
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
