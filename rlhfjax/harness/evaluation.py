"""Prompts, the reward normaliser and held-out evaluation (`Evaluator`), shared by every method, online and
offline.

The reward normaliser (lm-human-preferences): (gain, bias) such that the *initial* policy's RM
scores have mean 0 and std 1, fitted once before training and kept fixed; a fit on near-constant scores
(an untrained RM) prints a one-line warning with the spread it saw (`fit_normaliser_on`).

Held-out evaluation samples the current policy on fixed prompt batches with fixed keys (so evals at
different iterations differ only by the policy) and reports:
  eval/reward/proxy     normalised RM score            eval/reward/gold   toy lab only
  eval/reward/gold_se   the gold mean's standard error over the eval prompts (std / √n, toy lab): the noise
                        yardstick of one eval, against which a method's gain is judged
  eval/kl/seq_mean      Σ_t kl_t on the samples, with the estimator the method trains with (k1, k2, k3:
                        `objectives.core.kl_per_token`), so train and eval KL curves are comparable; with a
                        prompt context, from the reference on the plain prompt (`experience.judged_sequence`)
  eval/response/length  tokens incl. EOS               eval/num_prompts
  eval/meteor_similarity, eval/distinct_1, eval/distinct_2, eval/response/words   reward hacking and
                        diversity of the samples (`analysis.similarity`; METEOR between completions to
                        different prompts, SuperHF's measure: near 1 = collapse onto one answer)
and appends a few samples per eval to `<workdir>/samples.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax import distributed, parallel
from rlhfjax.analysis.similarity import similarity_metrics
from rlhfjax.data.batching import BatchIterator, collate_prompts
from rlhfjax.data.examples import preview, prompt_preview
from rlhfjax.data.hh import load_prompts
from rlhfjax.data.tokenizing import decode_responses
from rlhfjax.harness import experience
from rlhfjax.harness.roles import Roles
from rlhfjax.harness.state import with_normaliser
from rlhfjax.objectives.core import fit_reward_normalisation, normalise, sequence_kl
from rlhfjax.sampling import SamplingConfig

NUM_SAMPLES_SAVED = 8  # per eval, in samples.jsonl
NUM_SAMPLES_PRINTED = 2
# A normaliser gain above this (scores whose std is under 1/100 of the target std 1) is warned about: the RM
# barely tells the initial policy's samples apart (untrained, collapsed, or the wrong checkpoint), and the
# normalised reward is mostly its amplified noise.
FLAT_SCORES_GAIN = 100.0


def fit_normaliser_on(scores_N):
    """`objectives.core.fit_reward_normalisation` of the scores (the same numbers), with a one-line warning
    giving the spread it saw when they are near-constant (gain above `FLAT_SCORES_GAIN`)."""
    gain, bias = fit_reward_normalisation(scores_N)
    if float(gain) > FLAT_SCORES_GAIN:
        s = jnp.asarray(scores_N, jnp.float32).reshape(-1)
        print(f"reward normaliser: warning: near-constant RM scores on the initial policy's samples (std "
              f"{float(jnp.std(s)):.3g}, min {float(jnp.min(s)):.6g}, max {float(jnp.max(s)):.6g} over {s.size}) "
              f"give gain {float(gain):.4g}, so the normalised reward is mostly amplified RM noise: is the reward "
              "model (reward.init_from) trained?", flush=True)
    return gain, bias


def collate(examples, encoder) -> dict:
    """A prompt batch (left-padded tokens + mask) that also carries the prompt texts (for gold)."""
    batch = collate_prompts(examples, encoder)
    batch["prompts"] = [ex.prompt for ex in examples]
    return batch


def device_prompts(host: dict, mesh) -> dict:
    """The token arrays of a whole host prompt batch (the same on every process), sharded over the mesh's
    data axes."""
    return parallel.shard_batch(experience.prompt_arrays(host), mesh)


def eval_batches(source: str, data_dir: str | None, split: str, limit: int, encoder, batch_size: int,
                 name: str = "eval") -> list[dict]:
    """Held-out prompts as fixed host batches; the tail that does not fill a batch is dropped (and
    reported), so shapes stay static. A source without that split turns evaluation off (reported)."""
    try:
        examples, report = load_prompts(source, data_dir=data_dir, split=split, limit=limit or None)
    except (ValueError, KeyError, FileNotFoundError) as e:  # e.g. a dataset without that split
        print(f"{name}: no held-out prompts ({e}); evaluation off", flush=True)
        return []
    print(f"{name} prompts: {report.summary()}", flush=True)
    n = len(examples) // batch_size * batch_size
    if n < len(examples):
        print(f"{name}: using {n} of {len(examples)} prompts (whole batches of {batch_size})", flush=True)
    return [collate(examples[i:i + batch_size], encoder) for i in range(0, n, batch_size)]


def eval_key(seed: int) -> jax.Array:
    """The key of every held-out eval of a run with this seed (fixed: evals differ only by the policy)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 3)


@dataclasses.dataclass
class Evaluator:
    """How a run judges its policy, the same for every method, online or offline: the reward normaliser it fits
    once, and the held-out evals it logs (module docstring).

    `roles`: the policy's config (its params are passed in), the reference (the KL anchor; host params are put
    on the mesh for each eval only) and the reward model (None: no proxy reward). `batches`: the held-out prompt
    batches (`eval_batches`); `batch_size`: prompts per normaliser batch (the eval batch size: every method
    fits the same normaliser). `gold_fn(prompts, responses)` → gold rewards and `gold_metrics_fn(prompts,
    responses)` → more metrics of the samples (the toy lab's; None elsewhere). Every eval samples with the keys
    of `eval_key(seed)`."""

    roles: Roles
    mesh: Any
    sampling: SamplingConfig
    tokenizer: Any
    encoder: Any
    batch_size: int
    seed: int
    batches: list = dataclasses.field(default_factory=list)
    kl_estimator: str = "k1"  # as the method trains with, so train and eval KL curves are comparable
    chunk_size: int | None = None  # teacher-forced eval phases this many rows at a time (memory)
    gold_fn: Callable | None = None
    gold_metrics_fn: Callable | None = None
    samples_path: str | None = None  # a few samples per eval are appended here

    def fit_normaliser(self, policy_params, examples, num_batches: int):
        """(gain, bias) making the policy's RM scores mean 0, std 1 on `num_batches` batches of `batch_size`
        training prompts (`examples`). The one rule every method fits by: the batches are drawn with seed + 1
        and sampled with keys from fold_in(PRNGKey(seed), 2), so methods with the same seed and batch size
        fit the same normaliser."""
        # Whole batches on every process (process_count=1): they are placed like eval batches (`device_prompts`).
        prompt_iter = BatchIterator(examples, self.batch_size, lambda ex: collate(ex, self.encoder), seed=self.seed + 1,
                                    num_epochs=None, process_index=0, process_count=1)
        rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), 2)
        roles, scores = self.roles, []
        for i in range(num_batches):
            prompts = device_prompts(next(prompt_iter), self.mesh)
            _, score = experience.sample_and_score(
                policy_params, roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
                jax.random.fold_in(rng, i), policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg,
                sampling=self.sampling, chunk_size=self.chunk_size, **experience.plain_prompts(prompts))
            scores.append(score)
        return fit_normaliser_on(jnp.concatenate(scores))

    def normalise(self, state, policy_params, examples, num_batches: int, *, enabled: bool = True):
        """`state` (a `harness.state.PolicyState` before its first step) with the normaliser fitted on
        `policy_params`: the initial policy; unchanged without a reward model or with `enabled` False."""
        if not enabled or self.roles.reward is None:
            return state
        gain, bias = self.fit_normaliser(policy_params, examples, num_batches)
        print(f"reward normaliser: gain {float(gain):.4g} bias {float(bias):.4g}", flush=True)
        return with_normaliser(state, gain, bias, self.mesh)

    def __call__(self, policy_params, gain, bias, step: int) -> dict:
        """The policy on the held-out batches (module docstring) → eval metrics ({} without batches)."""
        roles, N = self.roles, self.sampling.max_new_tokens
        chunk_size = self.chunk_size
        if chunk_size and self.batches:  # a chunk that divides the eval batch, no larger than asked (memory)
            chunk_size = math.gcd(chunk_size, len(self.batches[0]["prompts"]))
        kw = dict(model_cfg=roles.policy.cfg, num_response=N, temperature=self.sampling.temperature,
                  chunk_size=chunk_size)
        reference = roles.reference.device_params() if self.batches else None
        rng = eval_key(self.seed)
        proxy, kl, length, gold, saved, texts, prompt_texts = [], [], [], [], [], [], []
        for i, host in enumerate(self.batches):
            prompts = device_prompts(host, self.mesh)
            key = jax.random.fold_in(rng, i)
            if roles.reward is None:  # e.g. DPO without a reward model: no proxy reward
                ro = experience.sample_phase(policy_params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
                                             key, model_cfg=roles.policy.cfg, cfg=self.sampling)
            else:
                ro, score = experience.sample_and_score(
                    policy_params, roles.reward.params, prompts["prompt_tokens_BxP"], prompts["prompt_mask_BxP"],
                    key, policy_cfg=roles.policy.cfg, reward_cfg=roles.reward.cfg, sampling=self.sampling,
                    chunk_size=chunk_size, **experience.plain_prompts(prompts))
                proxy.append(parallel.host(normalise(score, gain, bias)))
            logp = experience.logp_phase(policy_params, ro.sequence_BxL, ro.sequence_mask_BxL, **kw)
            # KL from the reference on the plain prompt: a prompted policy's distance from the unprompted one.
            ref = experience.logp_phase(reference, *experience.judged_sequence(ro, **experience.plain_prompts(prompts)),
                                        **kw)
            kl.append(parallel.host(sequence_kl(logp, ref, ro.response_mask_BxN, self.kl_estimator)))
            length.append(parallel.host(ro.response_mask_BxN).sum(-1))
            responses = decode_responses(self.tokenizer, ro)
            if self.gold_fn is not None:
                gold.append(np.asarray(self.gold_fn(host["prompts"], responses)))
            for j in range(min(NUM_SAMPLES_SAVED - len(saved), len(responses))):
                saved.append({"step": step, "prompt": host["prompts"][j], "response": responses[j],
                              **({"proxy": float(proxy[-1][j])} if proxy else {}),
                              **({"gold": float(gold[-1][j])} if gold else {})})
            texts.extend(responses)
            prompt_texts.extend(host["prompts"])
        del reference
        if not kl:
            return {}
        out = {"eval/kl/seq_mean": float(np.mean(np.concatenate(kl))),
               "eval/response/length": float(np.mean(np.concatenate(length))),
               "eval/num_prompts": float(len(texts))}
        # The same fixed-seed subset of eval prompts every time, so evals differ only by the policy.
        out.update({f"eval/{k}": v for k, v in similarity_metrics(texts).items()})
        if proxy:
            out["eval/reward/proxy"] = float(np.mean(np.concatenate(proxy)))
        if gold:
            golds = np.concatenate(gold)
            out["eval/reward/gold"] = float(np.mean(golds))
            out["eval/reward/gold_se"] = float(np.std(golds, ddof=1) / np.sqrt(golds.size)) if golds.size > 1 else 0.0
        if self.gold_metrics_fn is not None:
            out.update({f"eval/{k}": v for k, v in self.gold_metrics_fn(prompt_texts, texts).items()})
        if self.samples_path and distributed.is_primary():  # the full texts; the log gets a short view of a couple
            with open(self.samples_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in saved)
        for r in saved[:NUM_SAMPLES_PRINTED]:
            print(f"  [eval {step}] {prompt_preview(r['prompt'])!r} -> {preview(r['response'])!r}", flush=True)
        return out
