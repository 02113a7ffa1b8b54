"""`rlhfjax sft`: supervised fine-tuning on (prompt, response) demonstrations.

Loss: NLL of the response tokens only. Every `train.eval_every` steps: eval NLL/perplexity on the
eval split and sampled completions of eval prompts (written to `samples.jsonl`; on the toy lab
with their gold reward). Resumes from the latest checkpoint in `<workdir>/checkpoints`; ends by
exporting the policy as an HF checkpoint in `<workdir>/model`. Runs on `config.mesh` (params,
optimizer state and batches sharded; evals and sampling too).
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax import distributed
from rlhfjax.data.batching import BatchIterator, collate_prompts, collate_sft, padded_batches
from rlhfjax.data.examples import preview, prompt_preview
from rlhfjax.data.hh import load_sft
from rlhfjax.data.tokenizing import decode_responses
from rlhfjax.models.hf import save_pretrained
from rlhfjax.objectives import sft as sft_objective
from rlhfjax.data.sources import is_toylab, resolve_source
from rlhfjax.data.tokenizing import encoder_for, tokenizer_for
from rlhfjax.offline import runner
from rlhfjax.train.metrics import write_json
from rlhfjax.sampling import SamplingConfig, sample


def sample_completions(params, model_cfg, prompts: list, encoder, tokenizer, config, rng, batch_size: int,
                       mesh=None):
    """Sample one completion per prompt text (batched, fixed shapes) -> list of strings. Given a
    `mesh` (the params' mesh; call under `parallel.activate(mesh)`), prompt batches are sharded on it."""
    scfg = SamplingConfig(max_new_tokens=config.sample.max_new_tokens, temperature=config.sample.temperature,
                          top_p=config.sample.top_p, eos_id=tokenizer.eos_token_id, pad_id=encoder.pad_id)
    out = []
    for i, rows, n in padded_batches(prompts, batch_size):
        batch = collate_prompts(rows, encoder)
        # Padding rows need one real token for the sampler; they are dropped below.
        batch["prompt_mask_BxP"][n:, -1] = 1
        batch = {k: batch[k] for k in ("prompt_tokens_BxP", "prompt_mask_BxP")}
        batch = runner.shard(batch, mesh) if mesh is not None else jax.tree.map(jnp.asarray, batch)
        rollout = sample(params, batch["prompt_tokens_BxP"], batch["prompt_mask_BxP"], jax.random.fold_in(rng, i),
                         model_cfg=model_cfg, cfg=scfg)
        out += decode_responses(tokenizer, rollout)[:n]
    return out


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
    source, data_dir = resolve_source(config.data, "sft")
    limit = config.data.limit or None
    train_examples, report = load_sft(source, data_dir=data_dir, split=config.data.train_split, limit=limit)
    report.print("sft train")
    eval_examples, report = load_sft(source, data_dir=data_dir, split=config.data.eval_split,
                                     limit=config.data.eval_limit or None)
    report.print("sft eval")

    encoder = encoder_for(config, tokenizer)
    B = config.train.batch_size
    train_iter = BatchIterator(train_examples, B, functools.partial(collate_sft, encoder=encoder),
                               seed=config.seed, num_epochs=None)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng, sample_rng = jax.random.split(rng, 3)
    model_cfg, params, shardings = runner.model_params(config.model, len(tokenizer), init_rng, mesh)
    loss_config = sft_objective.SFTLossConfig(model_cfg)
    state = runner.create_state(params, shardings, config, state_rng, mesh)

    eval_step = jax.jit(functools.partial(sft_objective.response_nll, model_cfg=model_cfg))
    eval_batches = [collate_sft(rows, encoder) for _, rows, _ in padded_batches(eval_examples, B)]
    eval_prompts = [ex.prompt for ex in eval_examples[:config.sample.num_prompts]]
    toylab = is_toylab(config.data)

    def evaluate(state) -> dict:  # called by the loop under the mesh
        total = count = 0.0
        for batch in eval_batches:
            s, c = eval_step(state.params, runner.shard(batch, mesh))
            total, count = total + float(s), count + float(c)
        metrics = {"eval/nll": total / max(count, 1.0)}
        metrics["eval/perplexity"] = float(np.exp(metrics["eval/nll"]))
        step = int(state.step)
        completions = sample_completions(state.params, model_cfg, eval_prompts, encoder, tokenizer, config,
                                         jax.random.fold_in(sample_rng, step), B, mesh=mesh)
        rows = [{"step": step, "prompt": p, "completion": c} for p, c in zip(eval_prompts, completions)]
        if toylab:
            from rlhfjax.data.toylab import gold_rewards

            gold = gold_rewards(eval_prompts, completions)
            metrics["reward/gold"] = float(gold.mean())
            for row, g in zip(rows, gold):
                row["gold"] = float(g)
        if distributed.is_primary():
            with open(os.path.join(workdir, "samples.jsonl"), "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        for r in rows[:3]:
            print(f"  [{step}] {prompt_preview(r['prompt'])!r} -> {preview(r['completion'])!r}", flush=True)
        return metrics

    state, history = runner.fit(config, workdir, state, train_iter, sft_objective.loss_fn, loss_config,
                                mesh=mesh, eval_fn=evaluate)

    model_cfg = model_cfg.replace(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=encoder.pad_id)
    distributed.export(save_pretrained, model_cfg, state.params, os.path.join(workdir, "model"), tokenizer=tokenizer)
    final = {k: v for k, v in history[-1].items()} if history else {}
    summary = {"steps": config.train.steps, "final": final, "seconds": round(time.time() - t0, 1),
               "model_dir": os.path.join(workdir, "model")}
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary, state
