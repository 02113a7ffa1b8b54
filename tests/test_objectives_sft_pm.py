"""SFT and preference-model losses on a tiny model, against direct re-computation.

Losses return (total, count, metrics); the loss is total / count (`train.update`'s contract).
"""

import jax
import numpy as np
import pytest

from rlhfjax.models import ScalarModel, Transformer, init_params, positions_from_mask, preset
from rlhfjax.objectives import rm as rm_objective
from rlhfjax.objectives import sft

CFG = preset("llama", vocab_size=40, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
             max_position_embeddings=32)


def _loss(out):
    total, count, _ = out
    return float(total) / max(float(count), 1.0)


def _rows(prompt_lens, resp_lens, T, seed):
    rng = np.random.default_rng(seed)
    B = len(prompt_lens)
    tokens = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), np.int32)
    resp = np.zeros((B, T), np.int32)
    for b, (p, r) in enumerate(zip(prompt_lens, resp_lens)):
        tokens[b, :p + r] = rng.integers(1, 40, p + r)
        mask[b, :p + r] = 1
        resp[b, p:p + r] = 1
    return tokens, mask, resp


def _pad(batch, T, extra_rows=1):
    """Same examples, longer T and an extra padding row (row_mask 0)."""
    out = {}
    for k, v in batch.items():
        if v.ndim == 1:
            out[k] = np.concatenate([v, np.zeros(extra_rows, v.dtype)])
        else:
            v = np.pad(v, ((0, 0), (0, T - v.shape[1])))
            junk = np.ones((extra_rows, T), v.dtype) if "tokens" in k else np.zeros((extra_rows, T), v.dtype)
            out[k] = np.concatenate([v, junk])
    return out


def _sft_batch():
    tokens, mask, resp = _rows([3, 5, 2], [4, 2, 6], 10, seed=0)
    return {"tokens_BxT": tokens, "mask_BxT": mask, "response_mask_BxT": resp, "row_mask_B": np.ones(3, np.float32)}


def test_sft_loss_is_response_token_nll():
    params = init_params(CFG, jax.random.PRNGKey(0))
    batch = _sft_batch()
    total, count, _ = sft.loss_fn(params, batch, frozen=None, config=sft.SFTLossConfig(CFG), rng=None)
    logits = np.asarray(Transformer(CFG).apply({"params": params}, batch["tokens_BxT"],
                                               positions_from_mask(batch["mask_BxT"]), batch["mask_BxT"]).logits)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = [-logp[b, t - 1, batch["tokens_BxT"][b, t]] for b in range(3) for t in range(10)
           if batch["response_mask_BxT"][b, t]]
    assert float(count) == len(nll)
    assert float(total) == pytest.approx(np.sum(nll), rel=1e-5)


def test_sft_loss_ignores_padding_length_and_padding_rows():
    params = init_params(CFG, jax.random.PRNGKey(0))
    cfg = sft.SFTLossConfig(CFG)
    batch = _sft_batch()
    a = sft.loss_fn(params, batch, frozen=None, config=cfg, rng=None)
    b = sft.loss_fn(params, _pad(batch, 16), frozen=None, config=cfg, rng=None)
    assert float(a[1]) == float(b[1])
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-6)


def _pair_batch(seed=1):
    c, cm, cr = _rows([3, 4], [4, 3], 9, seed)
    r, rm, rr = _rows([3, 4], [2, 5], 9, seed + 1)
    r[:, :3] = c[:, :3]  # shared prompts
    r[1, :4] = c[1, :4]
    return {"chosen_tokens_BxT": c, "chosen_mask_BxT": cm, "chosen_response_mask_BxT": cr,
            "rejected_tokens_BxT": r, "rejected_mask_BxT": rm, "rejected_response_mask_BxT": rr,
            "row_mask_B": np.ones(2, np.float32)}


def _score(params, tokens, mask):
    s = np.asarray(ScalarModel(CFG).apply({"params": params}, tokens, positions_from_mask(mask), mask))
    last = mask.sum(1) - 1
    return s[np.arange(len(s)), last]


@pytest.mark.parametrize("objective", ["ranked", "binary"])
def test_pm_loss_matches_numpy_on_separately_scored_responses(objective):
    config = rm_objective.RMLossConfig(CFG, objective=objective)
    params = rm_objective.init_rm_params(config, jax.random.PRNGKey(2))
    # A non-zero head so scores differ between responses.
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(3), params["head"]["kernel"].shape)
    batch = _pair_batch()
    total, count, metrics = rm_objective.loss_fn(params, batch, frozen=None, config=config, rng=None)
    rc = _score(params, batch["chosen_tokens_BxT"], batch["chosen_mask_BxT"])
    rr = _score(params, batch["rejected_tokens_BxT"], batch["rejected_mask_BxT"])
    sp = lambda x: np.log1p(np.exp(x))  # noqa: E731
    want = sp(rr - rc) if objective == "ranked" else sp(-rc) + sp(rr)
    assert float(count) == 2  # rows
    assert float(total) == pytest.approx(want.sum(), rel=1e-5)
    assert float(metrics["rm/accuracy"]) == pytest.approx(np.mean(rc > rr))
    p_total, p_count, _ = rm_objective.loss_fn(params, _pad(batch, 14), frozen=None, config=config, rng=None)
    assert float(p_count) == 2  # the padding row is not counted
    assert float(p_total) == pytest.approx(float(total), rel=1e-5)


def test_ranked_list_of_two_equals_pairs():
    config = rm_objective.RMLossConfig(CFG)
    params = rm_objective.init_rm_params(config, jax.random.PRNGKey(2))
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(4), params["head"]["kernel"].shape)
    pairs = _pair_batch()
    ranked = {f"{k}_BxKxT": np.stack([pairs[f"chosen_{k}_BxT"], pairs[f"rejected_{k}_BxT"]], 1)
              for k in ("tokens", "mask", "response_mask")}
    ranked.update(rank_mask_BxK=np.ones((2, 2), np.float32), row_mask_B=pairs["row_mask_B"])
    a = rm_objective.loss_fn(params, pairs, frozen=None, config=config, rng=None)
    b = rm_objective.loss_fn(params, ranked, frozen=None, config=config, rng=None)
    assert float(a[1]) == float(b[1]) == 2
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-5)


def test_imitation_is_the_chosen_response_lm_loss_and_aux_lm_adds_it():
    pairs = _pair_batch()
    imitation = rm_objective.RMLossConfig(CFG, objective="imitation")
    lm_params = init_params(CFG, jax.random.PRNGKey(5))
    total, count, _ = rm_objective.loss_fn(lm_params, pairs, frozen=None, config=imitation, rng=None)
    sft_batch = {"tokens_BxT": pairs["chosen_tokens_BxT"], "mask_BxT": pairs["chosen_mask_BxT"],
                 "response_mask_BxT": pairs["chosen_response_mask_BxT"], "row_mask_B": pairs["row_mask_B"]}
    want_total, want_count, _ = sft.loss_fn(lm_params, sft_batch, frozen=None, config=sft.SFTLossConfig(CFG), rng=None)
    # imitation: the chosen responses' NLL summed over their tokens (count = those tokens)
    assert float(count) == float(want_count) == pairs["chosen_response_mask_BxT"].sum()
    assert float(total) == pytest.approx(float(want_total), rel=1e-6)
    want = float(want_total) / float(want_count)

    aux = rm_objective.RMLossConfig(CFG, objective="ranked", lm_coef=0.5)
    params = rm_objective.init_rm_params(aux, jax.random.PRNGKey(6), lm_params=lm_params)
    out = rm_objective.loss_fn(params, pairs, frozen=None, config=aux, rng=None)
    # Zero-initialised head: every score is 0, so the preference term is log 2 per row; the LM term is
    # the batch's chosen-token mean NLL, per row.
    assert float(out[1]) == 2
    assert _loss(out) == pytest.approx(np.log(2) + 0.5 * want, rel=1e-5)


def test_imitation_scores_are_mean_response_loglik():
    """pair_scores under imitation: Σ log p(response tokens) / their number, recomputed from logits."""
    pairs = _pair_batch()
    params = init_params(CFG, jax.random.PRNGKey(5))
    r_c, r_r = rm_objective.pair_scores(params, pairs, rm_objective.RMLossConfig(CFG, objective="imitation"))
    for side, got in (("chosen", r_c), ("rejected", r_r)):
        tokens, mask, resp = (pairs[f"{side}_{k}_BxT"] for k in ("tokens", "mask", "response_mask"))
        logits = np.asarray(Transformer(CFG).apply({"params": params}, tokens, positions_from_mask(mask), mask).logits,
                            np.float64)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        want = [np.mean([logp[b, t - 1, tokens[b, t]] for t in range(1, tokens.shape[1]) if resp[b, t]])
                for b in range(len(tokens))]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
