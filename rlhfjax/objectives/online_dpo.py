"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", OAIF,
§3 and Algorithm 1): each step samples two responses y¹, y² per prompt x from the *current* policy π_θ, an annotator
says which it prefers, and the pair (y⁺, y⁻) takes a direct-alignment step (DPO, IPO, cDPO) against the frozen
reference π_ref:

    (y⁺, y⁻) = (y¹, y²) if judge(x, y¹) > judge(x, y²), (y², y¹) if it is lower, weight 0 if equal;
    loss = −log σ(β Δ),  Δ = [log π_θ(y⁺|x) − log π_ref(y⁺|x)] − [log π_θ(y⁻|x) − log π_ref(y⁻|x)]

(Rafailov et al. 2023, eq. 7; IPO and cDPO replace the per-pair loss, `objectives.dpo`). Sampling and judging
are outside the gradient (OAIF §3), so the loss is offline DPO's on a batch built each step; `objectives.dpo`
computes it. What is new is only the pairing below, and the batch it makes of the samples: a tie (equal judge
scores, identical responses) says nothing about which response is better, so its pair gets weight 0 (it is not
counted in the loss's mean).
"""

from __future__ import annotations

import jax.numpy as jnp


def identical_pairs(tokens_RxN, mask_RxN):
    """tied_B: True where a prompt's two responses (rows 2i, 2i + 1) are the same token sequence."""
    m = mask_RxN.astype(bool)
    tok = jnp.where(m, tokens_RxN, -1)  # what follows a response never makes two equal ones differ
    return jnp.all((tok[0::2] == tok[1::2]) & (m[0::2] == m[1::2]), axis=-1)


def pair_by_judge(score_R, tied_B=None):
    """Rows of 2B samples grouped by prompt (rows 2i, 2i + 1 answer prompt i; `harness.experience.
    sample_and_score(..., num_samples=2)`) and their judge scores → (chosen_B, rejected_B, weight_B):
    the rows (indices into the 2B) of the preferred and the other response of each prompt, and the pair's
    weight, 0 for a tie (equal scores, or `tied_B`) and 1 otherwise. A tie's row order is the sampler's."""
    first, second = score_R[0::2], score_R[1::2]
    tie_B = first == second
    if tied_B is not None:
        tie_B = tie_B | tied_B
    swap_B = (second > first).astype(jnp.int32)
    base_B = 2 * jnp.arange(first.shape[0], dtype=jnp.int32)
    return base_B + swap_B, base_B + 1 - swap_B, 1.0 - tie_B.astype(jnp.float32)


def pairs_batch(sequence_RxL, sequence_mask_RxL, response_mask_RxN, chosen_B, rejected_B, weight_B, pad_id: int):
    """The judged pairs as `data.batching.collate_pairs` lays them out, for `objectives.dpo.loss_fn`: rows of
    sampled sequences (a left-padded prompt, then the response in the last N slots) become each row's prompt and
    response tokens first, then padding; `row_mask_B` = the pairs' weights."""
    P = sequence_RxL.shape[1] - response_mask_RxN.shape[1]
    mask = sequence_mask_RxL.astype(jnp.int32)
    order = jnp.argsort(1 - mask, axis=-1, stable=True)  # real slots first, in their order
    take = lambda x: jnp.take_along_axis(x.astype(jnp.int32), order, axis=-1)  # noqa: E731
    packed = {"mask_BxT": take(mask), "response_mask_BxT": take(jnp.pad(response_mask_RxN, ((0, 0), (P, 0))))}
    packed["tokens_BxT"] = jnp.where(packed["mask_BxT"] > 0, take(sequence_RxL), pad_id)
    return {"row_mask_B": weight_B, **{f"{side}_{k}": x[rows] for side, rows in (("chosen", chosen_B),
                                                                                  ("rejected", rejected_B))
                                       for k, x in packed.items()}}
