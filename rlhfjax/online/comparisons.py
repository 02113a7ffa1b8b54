"""Comparisons drawn from policies, and preference models scored on them (iterated online RLHF).

`sample_pairs` draws labelling tasks `{"id", "prompt", "response_a", "response_b", "source_b"}` from the
current policy: both responses from it, or, for a fraction of the pairs, the second from an earlier
policy (Bai et al. 2022, §4.5, mix comparisons across policy snapshots). The two responses' positions
are shuffled so a person labelling them cannot tell which came from where. Pairs whose two responses
are the same text are not worth a label: they are dropped, counted, and more prompts are sampled
until the requested number of distinct pairs is reached.

`pair_margins` scores comparisons with a scalar PM (r_chosen − r_rejected per pair);
`analysis.calibration.pair_metrics` turns margins into accuracy against the labels and, on the toy lab,
agreement with the gold reward's preference.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from rlhfjax import parallel
from rlhfjax.data.batching import BatchIterator, collate_pairs, padded_batches
from rlhfjax.data.tokenizing import decode_responses
from rlhfjax.errors import BadInputError
from rlhfjax.models import api
from rlhfjax.models.hf import load_pretrained, load_pretrained_scalar
from rlhfjax.objectives import rm as rm_objective
from rlhfjax.harness import evaluation, experience

MAX_BATCHES_PER_NEEDED = 20  # give up (clear error) when a policy keeps repeating itself this badly


def load_policy(path: str, mesh, dtype: str = "float32"):
    """(ModelConfig, params on `mesh`) of an LM directory."""
    cfg, host = load_pretrained(path, dtype=dtype)
    return cfg, api.place(host, api.param_shardings(cfg, mesh, "lm"))


def sample_pairs(policies: list, prompts: list, num_pairs: int, *, encoder, tokenizer, sampling, mesh,
                 batch_size: int, seed: int, earlier_frac: float = 0.0, id_prefix: str = "pair") -> tuple[list, dict]:
    """`num_pairs` tasks from `policies[-1]` (each policy a (cfg, params) pair; earlier ones are older
    snapshots), on prompts drawn from `prompts` in a `seed`-shuffled order → (tasks, counts)."""
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    it = BatchIterator(prompts, batch_size, lambda ex: evaluation.collate(ex, encoder), seed=seed, num_epochs=None,
                       process_index=0, process_count=1)  # whole batches on every process, like eval batches
    (cfg, params), earlier = policies[-1], policies[:-1]
    use_earlier = earlier_frac > 0 and bool(earlier)
    tasks, counts = [], {"identical": 0, "from_earlier": 0, "sampled": 0}
    max_batches = MAX_BATCHES_PER_NEEDED * math.ceil(num_pairs / batch_size)
    for i in range(max_batches):
        if len(tasks) == num_pairs:
            break
        host = next(it)
        dev = evaluation.device_prompts(host, mesh)
        k = jax.random.fold_in(key, i)
        ro = experience.sample_phase(params, dev["prompt_tokens_BxP"], dev["prompt_mask_BxP"], k, model_cfg=cfg,
                                     cfg=sampling, num_samples=2)
        both = decode_responses(tokenizer, ro)
        first, second = both[0::2], both[1::2]
        source = ["current"] * len(first)
        if use_earlier:
            pick = rng.random(len(first)) < earlier_frac
            which = rng.integers(len(earlier), size=len(first))
            for j, (e_cfg, e_params) in enumerate(earlier):
                rows = np.flatnonzero(pick & (which == j))
                if rows.size == 0:
                    continue
                e_ro = experience.sample_phase(e_params, dev["prompt_tokens_BxP"], dev["prompt_mask_BxP"],
                                               jax.random.fold_in(k, j + 1), model_cfg=e_cfg, cfg=sampling)
                e_texts = decode_responses(tokenizer, e_ro)
                for r in rows:
                    second[r], source[r] = e_texts[r], f"policy_{j}"
        for p, a, b, src in zip(host["prompts"], first, second, source):
            counts["sampled"] += 1
            if a == b:
                counts["identical"] += 1
                continue
            if len(tasks) == num_pairs:
                break
            counts["from_earlier"] += src != "current"
            if rng.random() < 0.5:
                a, b = b, a
            tasks.append({"id": f"{id_prefix}-{len(tasks):06d}", "prompt": p, "response_a": a, "response_b": b,
                          "source_b": src})
    if len(tasks) < num_pairs:
        raise BadInputError(f"only {len(tasks)} of {num_pairs} distinct pairs after {counts['sampled']} samples "
                            f"({counts['identical']} identical): the policy has collapsed onto few responses",
                            "ask for fewer comparisons, or sample at a higher temperature")
    return tasks, counts


def pair_margins(pm_dir: str, pairs: list, *, encoder, mesh, batch_size: int, dtype: str = "float32") -> np.ndarray:
    """r_chosen − r_rejected of every pair under the scalar PM saved in `pm_dir`."""
    cfg, host = load_pretrained_scalar(pm_dir, dtype=dtype)
    params = api.place(host, api.param_shardings(cfg, mesh, "scalar"))
    loss_cfg = rm_objective.RMLossConfig(cfg)
    scores = jax.jit(lambda p, b: rm_objective.pair_scores(p, b, loss_cfg))
    out = []
    with parallel.activate(mesh):
        for _, rows, n in padded_batches(pairs, batch_size):
            r_c, r_r = scores(params, parallel.shard_batch(collate_pairs(rows, encoder), mesh))
            out.append(np.asarray(r_c - r_r)[:n])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
