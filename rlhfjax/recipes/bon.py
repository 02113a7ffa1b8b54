"""`rlhfjax bon`: best-of-n against the reward model, for a list of n in one run (and optionally its
distillation into the policy: expert iteration).

For each held-out prompt (data.eval_split, `bon.num_prompts` of them) the policy samples a pool of
`bon.pool` completions, scored by the RM (normalised as every online method does: gain and bias that
give the initial policy's training-prompt rollouts mean 0, std 1) and, on the toy lab, by the gold
reward. For each n in `bon.n` the pool splits into ⌊pool/n⌋ disjoint groups of n; the best of each group
by proxy (ties: the earlier sample) is one best-of-n draw. Per n it reports the mean proxy and gold
reward of those draws, the analytic KL log n − (n−1)/n, and next to it the plug-in estimate of the KL
on each prompt's pool (`analysis.best_of_n`: it sees repeated completions, which the analytic value
ignores), and the METEOR similarity / distinct-n of the chosen completions (one per prompt).

Written to the run directory: metrics.jsonl with one record per n (step = n; `kl/seq_mean` is the
analytic KL, so `analysis.report` and the reward-vs-√KL plot put best-of-n on the axes of the other
methods), reward_vs_sqrt_kl.png, summary.json (the table).

`bon.distill=True` first distils best-of-`bon.distill_n` into the policy for `train.iterations`
iterations of `train.batch_size` prompts on the online runner: SuperHF's iteration with top-1 and no KL
prior, i.e. supervised fine-tuning on the policy's own best-of-n (expert iteration), in
`<workdir>/distill` (its own metrics, evals, checkpoints, model); the table is then of the distilled policy.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from rlhfjax import commands, distributed, parallel
from rlhfjax.analysis import best_of_n
from rlhfjax.analysis import report as kl_report
from rlhfjax.analysis.similarity import meteor_mode, similarity_metrics
from rlhfjax.data.hh import load_prompts
from rlhfjax.data.sources import resolve_source
from rlhfjax.data.tokenizing import decode_responses
from rlhfjax.errors import ConfigError
from rlhfjax.harness import evaluation, experience
from rlhfjax.objectives.core import normalise
from rlhfjax.models import api
from rlhfjax.models.factory import execution
from rlhfjax.models.hf import load_pretrained
from rlhfjax.online import runner
from rlhfjax.train.metrics import MetricsWriter, write_json


def check(config) -> list[int]:
    ns, pool = [int(n) for n in config.bon.n], int(config.bon.pool)
    if not ns or min(ns) < 1 or max(ns) > pool:
        raise ConfigError(f"bon.n={tuple(ns)} must be >= 1 and at most bon.pool={pool}")
    return ns


def distill_config(config) -> ml_collections.ConfigDict:
    """SuperHF's config for expert iteration: best of `bon.distill_n`, top-1, no KL prior, one step per
    iteration (prompt accumulation = the whole prompt batch)."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.superhf = ml_collections.ConfigDict({
        "superbatch": config.bon.distill_n, "top_k": 1, "kl_coef": 0.0, "kl_prior": "ref_policy",
        "prompt_accumulation": config.train.batch_size, "drop_empty": True})
    return c


def sample_pools(policy_params, setup, batches, mesh, *, pool: int, rng, gain, bias):
    """→ proxy (P, pool), gold (P, pool) or None, completions as token tuples and texts (P lists of pool),
    the P prompt texts."""
    roles = setup.roles
    proxy, gold, keys, texts, prompt_texts = [], [], [], [], []
    for i, host in enumerate(batches):
        prompts = evaluation.device_prompts(host, mesh)
        ro, raw = experience.sample_and_score(
            policy_params, roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
            jax.random.fold_in(rng, i), policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg,
            sampling=setup.sampling, num_samples=pool, chunk_size=pool, **experience.plain_prompts(prompts))
        proxy.append(parallel.host(normalise(raw, gain, bias)).reshape(-1, pool))
        responses = decode_responses(setup.tokenizer, ro)
        tokens, mask = parallel.host(ro.tokens_BxN), parallel.host(ro.response_mask_BxN).astype(bool)
        rows = [tuple(t[m].tolist()) for t, m in zip(tokens, mask)]
        keys += [rows[j:j + pool] for j in range(0, len(rows), pool)]
        texts += [responses[j:j + pool] for j in range(0, len(responses), pool)]
        prompt_texts += host["prompts"]
        if setup.gold_fn is not None:
            per_row = [p for p in host["prompts"] for _ in range(pool)]
            gold.append(np.asarray(setup.gold_fn(per_row, responses), np.float64).reshape(-1, pool))
    return np.concatenate(proxy), (np.concatenate(gold) if gold else None), keys, texts, prompt_texts


def table(proxy, gold, keys, texts, prompts, ns: list[int], gold_metrics_fn=None) -> list[dict]:
    """One row per n; `gold_metrics_fn(prompts, chosen texts)` (the toy lab's behaviour metrics) adds
    the chosen completions' gold components and refusal and compliance rates."""
    rows = []
    for n in ns:
        idx = best_of_n.best_in_groups(proxy, n)
        kl = float(best_of_n.analytic_kl(n))
        row = {"bon/n": n, "kl/seq_mean": kl, "kl/analytic": kl, "kl/sqrt": float(np.sqrt(kl)),
               "kl/plugin": float(np.mean([best_of_n.plugin_kl(k, s, n) for k, s in zip(keys, proxy)])),
               "reward/proxy": float(np.take_along_axis(proxy, idx, 1).mean()), "bon/groups": idx.shape[1]}
        if gold is not None:
            row["reward/gold"] = float(np.take_along_axis(gold, idx, 1).mean())
        chosen = [t[j] for t, j in zip(texts, idx[:, 0])]  # one per prompt: completions to different prompts
        row.update({f"chosen/{k}": v for k, v in similarity_metrics(chosen).items()})
        if gold_metrics_fn is not None:
            row.update(gold_metrics_fn(prompts, chosen))
        rows.append(row)
    return rows


def run(config, workdir: str, mesh=None) -> dict:
    t0 = time.time()
    ns = check(config)
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    parallel.check_batch_size(config.bon.prompt_batch, mesh, what="bon.prompt_batch")
    distilled = None
    if config.bon.distill:
        distilled = commands.get("superhf").run(distill_config(config), os.path.join(workdir, "distill"), mesh)
    setup = runner.prepare(config, mesh, with_value=False)
    policy = setup.roles.policy.params  # the initial policy: the normaliser is fitted on it, as everywhere
    if distilled:  # the table is of the distilled policy, as its run exported it
        policy = api.place(load_pretrained(distilled["model_dir"], **execution(config.policy))[1],
                           setup.roles.policy.shardings)
    source, data_dir = resolve_source(config.data, "prompts")
    B = config.bon.prompt_batch
    batches = evaluation.eval_batches(source, data_dir, config.data.eval_split, config.bon.num_prompts, setup.encoder,
                                      B, name="bon")
    if not batches:
        raise ConfigError(f"bon needs held-out prompts (data.eval_split={config.data.eval_split!r}, at least "
                          f"bon.prompt_batch={B} of them)")
    rng = jax.random.PRNGKey(config.seed)
    with parallel.activate(mesh):
        gain, bias = 1.0, 0.0
        if config.reward.normalise:  # fitted on the initial policy, as the online methods do
            examples, _ = load_prompts(source, data_dir=data_dir, split=config.data.train_split,
                                       limit=config.data.limit or None)
            judge = evaluation.Evaluator(setup.roles, mesh, setup.sampling, setup.tokenizer, setup.encoder,
                                         config.train.eval_batch_size, config.seed)
            gain, bias = judge.fit_normaliser(setup.roles.policy.params, examples, config.reward.norm_batches)
        pools = sample_pools(policy, setup, batches, mesh, pool=config.bon.pool, rng=jax.random.fold_in(rng, 3),
                             gain=gain, bias=bias)
    rows = table(*pools, ns, gold_metrics_fn=setup.gold_metrics_fn)
    writer = MetricsWriter(workdir, resume_step=-1)  # a rerun replaces the records (-1 keeps none)
    for row in rows:
        writer.write(row["bon/n"], row)
    writer.close()
    for row in rows:
        gold = f" gold {row['reward/gold']:+.3f}" if "reward/gold" in row else ""
        print(f"[bon] n={row['bon/n']:>3}: proxy {row['reward/proxy']:+.3f}{gold}  KL analytic "
              f"{row['kl/analytic']:.3f} plug-in {row['kl/plugin']:.3f}  METEOR {row['chosen/meteor_similarity']:.3f}",
              flush=True)
    plot, why_not = kl_report.plot_run(workdir) if distributed.is_primary() else (None, "not process 0")
    summary = {"table": rows, "num_prompts": int(pools[0].shape[0]), "pool": int(config.bon.pool),
               "reward_normaliser": {"gain": float(gain), "bias": float(bias)}, "meteor": meteor_mode(),
               "plot": plot or why_not, "distill": distilled, "seconds": round(time.time() - t0, 1)}
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
