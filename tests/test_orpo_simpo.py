"""ORPO and SimPO, the reference-free pairwise objectives: both losses against numpy transcriptions of the papers'
equations on a tiny random policy (responses of different lengths, a padding row, a pair with an empty
response), their values where chosen and rejected are equally likely, gradients through the policy only, bad
values refused in one line, both recipes end to end (no reference column) and, on the briefly trained toy lab,
that each raises the held-out gold reward over the SFT policy by more than the eval's noise."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_online import make_lab

from rlhfjax import parallel
from rlhfjax.cli import main
from rlhfjax.config import load_config
from rlhfjax.data.batching import Encoder, TokenizeConfig, collate_pairs
from rlhfjax.data.examples import PreferencePair
from rlhfjax.data.hh import load_hh
from rlhfjax.data.tokenizing import load_tokenizer
from rlhfjax.errors import ConfigError
from rlhfjax.models import api
from rlhfjax.models.hf import load_pretrained
from rlhfjax.objectives import orpo as O, simpo as S
from rlhfjax.offline import reference
from rlhfjax.recipes import orpo as orpo_recipe, simpo as simpo_recipe
from rlhfjax.train.metrics import read_jsonl

EXP = os.path.join(os.path.dirname(__file__), "..", "experiments")
CONFIGS = {"orpo": os.path.join(EXP, "toylab_orpo.py"), "simpo": os.path.join(EXP, "toylab_simpo.py")}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_toylab):
    """A toy lab with a random tiny policy (sft/) and reward model (rm/) on disk."""
    return make_lab(tmp_path_factory.mktemp("orpo_simpo"), shared_toylab)


@pytest.fixture(scope="module")
def model(lab):
    """(cfg, params, encoder, 12 toy-lab pairs)."""
    cfg, host = load_pretrained(str(lab / "sft"))
    encoder = Encoder(load_tokenizer(str(lab / "toylab" / "tokenizer")),
                      TokenizeConfig(max_prompt_len=16, max_response_len=16))
    pairs, _ = load_hh(str(lab / "toylab" / "comparisons"), data_dir="mixed", split="train", limit=12)
    # Sharper than init (logits ×3) so log-probs spread over a few nats between responses.
    return cfg, jax.tree.map(lambda x: 3.0 * jnp.asarray(x), host), encoder, pairs


def _batch(model):
    """6 real pairs (the last with its rejected response emptied, as truncation can leave it) and 2 padding rows."""
    _, _, encoder, pairs = model
    batch = collate_pairs(pairs[:6] + [None, None], encoder)
    batch["rejected_response_mask_BxT"][5] = 0
    return batch


def _np_mean_logps(params, cfg, batch):
    """numpy: each response's mean token log-prob (log-softmax of the logits at t−1, read at token t) and count."""
    out = {}
    for side in ("chosen", "rejected"):
        tokens, mask = batch[f"{side}_tokens_BxT"], batch[f"{side}_mask_BxT"]
        logits = np.asarray(jax.jit(api.lm_logits, static_argnums=1)(params, cfg, tokens, mask), np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        logp = np.take_along_axis(logits[:, :-1], tokens[:, 1:, None], -1)[..., 0] - logz[:, :-1]
        keep = (batch[f"{side}_response_mask_BxT"][:, 1:] * mask[:, 1:]) > 0
        count = keep.sum(1)
        out[side] = (np.where(keep, logp, 0.0).sum(1) / np.maximum(count, 1), count)
    return out


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _valid(batch, lp):
    return (batch["row_mask_B"] > 0) & (lp["chosen"][1] > 0) & (lp["rejected"][1] > 0)


def _run_loss(loss_fn, params, batch, config, frozen=None):
    return jax.jit(lambda p, b, f: loss_fn(p, b, frozen=f, config=config, rng=None))(params, batch, frozen)


# --------------------------------------------------------------------------------------------
# The losses


@pytest.mark.parametrize("beta, ratio", [(2.0, 0.5), (2.5, 0.1)])
def test_simpo_loss_and_metrics_match_numpy(model, beta, ratio):
    """L = −log σ(β/|y_w| log π(y_w) − β/|y_l| log π(y_l) − γ), γ = ratio·β (Meng et al. 2024, Eq. 6)."""
    cfg, params, _, _ = model
    batch = _batch(model)
    lp = _np_mean_logps(params, cfg, batch)
    (m_w, n_w), (m_l, n_l) = lp["chosen"], lp["rejected"]
    assert len(set(n_w[:5].tolist()) | set(n_l[:5].tolist())) > 2  # responses of different lengths
    v = _valid(batch, lp)
    assert v.sum() == 5  # the padding rows and the pair with an empty response do not count
    r_w, r_l = beta * m_w[v], beta * m_l[v]
    want = -_np_log_sigmoid(r_w - r_l - ratio * beta)
    config = S.SimPOLossConfig(cfg, beta=beta, gamma_beta_ratio=ratio)
    total, count, metrics = _run_loss(S.loss_fn, params, batch, config)
    assert float(count) == 5 and float(total) == pytest.approx(want.sum(), rel=1e-5)
    expect = {"loss": want.mean(), "accuracy": np.mean((r_w > r_l) + 0.5 * (r_w == r_l)), "margin": np.mean(r_w - r_l),
              "reward_chosen": r_w.mean(), "reward_rejected": r_l.mean(), "logp_chosen": m_w[v].mean(),
              "logp_rejected": m_l[v].mean()}
    assert set(metrics) == {f"simpo/{k}" for k in expect}
    for k, x in expect.items():
        assert float(metrics[f"simpo/{k}"]) == pytest.approx(float(x), rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_loss_and_metrics_match_numpy(model, lam):
    """L = −1/|y_w| log π(y_w) + λ·(−log σ(log odds(y_w) − log odds(y_l))), odds = P/(1 − P), P = the geometric
    mean token probability (Hong et al. 2024, Eqs. 4, 6, 7), written here straight from P."""
    cfg, params, _, _ = model
    batch = _batch(model)
    lp = _np_mean_logps(params, cfg, batch)
    v = _valid(batch, lp)
    m_w, m_l = lp["chosen"][0][v], lp["rejected"][0][v]
    p_w, p_l = np.exp(m_w), np.exp(m_l)
    log_or = np.log(p_w / (1 - p_w)) - np.log(p_l / (1 - p_l))
    nll, odds_term = -m_w, -_np_log_sigmoid(log_or)
    want = nll + lam * odds_term
    config = O.ORPOLossConfig(cfg, odds_ratio_weight=lam)
    total, count, metrics = _run_loss(O.loss_fn, params, batch, config)
    assert float(count) == 5 and float(total) == pytest.approx(want.sum(), rel=1e-5)
    expect = {"loss": want.mean(), "nll": nll.mean(), "or": odds_term.mean(), "margin": log_or.mean(),
              "accuracy": np.mean((log_or > 0) + 0.5 * (log_or == 0)), "logp_chosen": m_w.mean(),
              "logp_rejected": m_l.mean()}
    assert set(metrics) == {f"orpo/{k}" for k in expect}
    for k, x in expect.items():
        assert float(metrics[f"orpo/{k}"]) == pytest.approx(float(x), rel=1e-5, abs=1e-6), k


def test_log_odds_is_accurate_and_finite_from_far_below_to_next_to_zero():
    """log odds = m − log(1 − eᵐ) against float64 over seven decades of −m; where P rounds to 1 it is capped, with
    finite gradients everywhere (the plain float32 formula is −inf or NaN there)."""
    m = -np.logspace(-5, 2, 300)
    got = np.asarray(jax.jit(O.log_odds)(jnp.asarray(m, jnp.float32)), np.float64)
    m32 = m.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(got, m32 - np.log(-np.expm1(m32)), rtol=2e-6, atol=1e-6)
    edge = jnp.asarray([0.0, -1e-9, -1e-7, -80.0, -200.0], jnp.float32)
    grads = jax.vmap(jax.grad(O.log_odds))(edge)
    assert np.all(np.isfinite(np.asarray(O.log_odds(edge)))) and np.all(np.isfinite(np.asarray(grads)))
    cap = O.MAX_MEAN_LOGP
    assert float(O.log_odds(edge)[0]) == pytest.approx(cap - math.log(-math.expm1(cap)), rel=1e-5)


def test_values_where_chosen_and_rejected_are_equally_likely(model):
    """Chosen = rejected (equal mean log-probs): SimPO's loss is −log σ(−γ) = log(1 + e^γ) and ORPO's odds term
    log 2, so ORPO's loss is its NLL + λ·log 2; neither ranks the pair (accuracy 0.5, margin 0)."""
    cfg, params, encoder, pairs = model
    same = collate_pairs([PreferencePair(p.prompt, p.chosen, p.chosen) for p in pairs[:4]], encoder)
    for beta, ratio, want in [(2.0, 0.5, math.log(1 + math.e)), (2.5, 0.0, math.log(2.0)),
                              (1.0, 2.0, math.log(1 + math.exp(2.0)))]:
        total, count, metrics = _run_loss(S.loss_fn, params, same, S.SimPOLossConfig(cfg, beta, ratio))
        assert float(count) == 4 and float(total) / 4 == pytest.approx(want, rel=1e-6)
        assert float(metrics["simpo/accuracy"]) == 0.5 and float(metrics["simpo/margin"]) == 0.0
    nll = -_np_mean_logps(params, cfg, same)["chosen"][0]
    for lam in (0.1, 0.5):
        total, count, metrics = _run_loss(O.loss_fn, params, same, O.ORPOLossConfig(cfg, lam))
        assert float(metrics["orpo/or"]) == pytest.approx(math.log(2.0), rel=1e-6)
        assert float(total) == pytest.approx(float(np.sum(nll + lam * math.log(2.0))), rel=1e-5)
        assert float(metrics["orpo/accuracy"]) == 0.5 and float(metrics["orpo/margin"]) == 0.0


@pytest.mark.parametrize("objective, config", [(S, lambda cfg: S.SimPOLossConfig(cfg)),
                                               (O, lambda cfg: O.ORPOLossConfig(cfg))], ids=["simpo", "orpo"])
def test_gradients_flow_through_the_policy_only_and_rows_that_do_not_count_weigh_nothing(model, objective, config):
    """No reference: whatever `frozen` holds changes neither loss nor gradient. The tokens of padding rows and
    of a pair with an empty response do not move the gradient, and the batch's (total, count) split in two
    halves adds up exactly (gradient accumulation)."""
    cfg, params, _, _ = model
    batch, config = _batch(model), config(cfg)
    grad = jax.jit(jax.grad(lambda p, b, f: objective.loss_fn(p, b, frozen=f, config=config, rng=None)[0]))
    g = grad(params, batch, None)
    leaves = [np.asarray(x) for x in jax.tree.leaves(g)]
    assert all(np.all(np.isfinite(x)) for x in leaves) and max(np.abs(x).max() for x in leaves) > 0
    other = jax.tree.map(lambda x: x + 1.0, params)
    for a, b in zip(leaves, jax.tree.leaves(grad(params, batch, other))):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert float(_run_loss(objective.loss_fn, params, batch, config, other)[0]) == float(
        _run_loss(objective.loss_fn, params, batch, config)[0])
    scrambled = {k: v.copy() for k, v in batch.items()}
    for key in ("chosen_tokens_BxT", "rejected_tokens_BxT"):
        scrambled[key][5:] = (scrambled[key][5:] + 7) % cfg.vocab_size
    for a, b in zip(leaves, jax.tree.leaves(grad(params, scrambled, None))):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-7)
    halves = [_run_loss(objective.loss_fn, params, {k: v[s] for k, v in batch.items()}, config)
              for s in (slice(0, 4), slice(4, 8))]
    total, count, _ = _run_loss(objective.loss_fn, params, batch, config)
    assert float(halves[0][1] + halves[1][1]) == float(count) == 5
    assert float(halves[0][0] + halves[1][0]) == pytest.approx(float(total), rel=1e-5)


def test_bad_values_stop_with_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="simpo.beta"):
        S.SimPOLossConfig(None, beta=0.0)
    with pytest.raises(ConfigError, match="gamma_beta_ratio"):
        S.SimPOLossConfig(None, gamma_beta_ratio=float("nan"))
    with pytest.raises(ConfigError, match="odds_ratio_weight"):
        O.ORPOLossConfig(None, odds_ratio_weight=-0.1)
    for command, override in (("simpo", "simpo.beta=-2"), ("simpo", "simpo.gamma_beta_ratio=-0.5"),
                              ("orpo", "orpo.odds_ratio_weight=-1")):
        assert main([command, "--config", f"{CONFIGS[command]}:smoke", "--workdir", str(tmp_path / command),
                     f"--config.{override}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rlhfjax: error: {override.split('=')[0]}=") and "\n" not in err, err


# --------------------------------------------------------------------------------------------
# The recipes


def test_orpo_runs_without_a_reference_column_and_logs_its_terms(lab, tmp_path):
    config = load_config(f"{CONFIGS['orpo']}:smoke", [
        f"--config.data.toylab_dir={lab / 'toylab'}", f"--config.policy.init_from={lab / 'sft'}",
        "--config.optim.learning_rate=1e-2", "--config.optim.warmup_steps=0", "--config.train.save_every=0"])
    workdir = str(tmp_path / "orpo")
    summary = orpo_recipe.run(config, workdir, parallel.single_device_mesh())
    assert not os.path.exists(os.path.join(workdir, reference.REFERENCE_FILE))
    assert summary["reference"] == {"mode": "none"} and summary["odds_ratio_weight"] == 0.1
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    evals = [r for r in rows if "eval/orpo/loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 4] and evals[0]["eval/kl/seq_mean"] == 0.0
    for r in evals:
        for key in ("loss", "nll", "or", "margin", "accuracy", "gold_agreement", "logp_chosen", "logp_rejected"):
            assert np.isfinite(r[f"eval/orpo/{key}"]), key
        assert r["eval/orpo/loss"] == pytest.approx(r["eval/orpo/nll"] + 0.1 * r["eval/orpo/or"], rel=1e-5)
        assert np.isfinite(r["eval/reward/gold"]) and "eval/reward/proxy" not in r
    assert evals[-1]["eval/kl/seq_mean"] > 0  # the policy moved
    train = [r for r in rows if "orpo/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["loss"] == pytest.approx(r["orpo/loss"], rel=1e-6) for r in train)
    assert summary["train_pairs"] == 64 and os.path.isdir(summary["model_dir"])


def test_simpo_on_local_files_skips_a_bad_pair_and_adds_the_proxy_reward(lab, tmp_path):
    """HH-format local files (no toy lab): a pair identical once truncated is skipped and counted, the reward
    model adds a normalised proxy reward, still no reference column."""
    data = tmp_path / "hh"
    data.mkdir()
    pairs, _ = load_hh(str(lab / "toylab" / "comparisons"), data_dir="mixed", split="train", limit=40)
    rows = [{"chosen": f"{p.prompt} {p.chosen}", "rejected": f"{p.prompt} {p.rejected}"} for p in pairs]
    long = " river" * 30  # both responses are cut inside this run of words
    rows[3] = {"chosen": f"{pairs[3].prompt} {pairs[3].chosen}{long} yes",
               "rejected": f"{pairs[3].prompt} {pairs[3].chosen}{long} no"}
    for split, part in (("train", rows[:32]), ("test", rows[32:])):
        with open(data / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    config = load_config(f"{CONFIGS['simpo']}:smoke", [
        f"--config.data.source={data}", "--config.data.data_dir=", "--config.data.max_response_len=24",
        f"--config.tokenizer.path={lab / 'toylab' / 'tokenizer'}", f"--config.policy.init_from={lab / 'sft'}",
        f"--config.reward.init_from={lab / 'rm'}", "--config.reward.norm_batches=1", "--config.train.steps=2",
        "--config.train.batch_size=4", "--config.eval.prompt_limit=8", "--config.eval.batch_size=4"])
    workdir = str(tmp_path / "simpo")
    summary = simpo_recipe.run(config, workdir, parallel.single_device_mesh())
    assert summary["skipped"]["train"] == {reference.IDENTICAL: 1} and summary["train_pairs"] == 31
    assert summary["reference"] == {"mode": "none"} and summary["gamma"] == pytest.approx(1.0)
    assert not os.path.exists(os.path.join(workdir, reference.REFERENCE_FILE))
    evals = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "eval/simpo/loss" in r]
    assert [r["step"] for r in evals] == [0, 2] and "eval/reward/gold" not in evals[0]
    assert "eval/simpo/gold_agreement" not in evals[0] and np.isfinite(evals[-1]["eval/reward/proxy"])
    assert summary["reward_normaliser"]["fitted"]


# --------------------------------------------------------------------------------------------
# Learning on the toy lab

LEARN_STEPS = 50


def _learn(method, trained_lab, workdir, *extra):
    """A short run from conftest's briefly trained SFT policy with the experiment's settings (and `extra`),
    evaluated on the held-out prompts at step 0 (the SFT policy) and at the end with the same sampling keys →
    (summary, the two eval rows)."""
    config = load_config(CONFIGS[method], [
        f"--config.data.toylab_dir={trained_lab['data']}", f"--config.policy.init_from={trained_lab['sft']}",
        f"--config.train.steps={LEARN_STEPS}", f"--config.train.eval_every={LEARN_STEPS}",
        "--config.optim.warmup_steps=5", "--config.train.save_every=0", "--config.train.log_every=10", *extra])
    recipe = {"orpo": orpo_recipe, "simpo": simpo_recipe}[method]
    summary = recipe.run(config, str(workdir), parallel.single_device_mesh())
    before, after = [r for r in read_jsonl(str(workdir / "metrics.jsonl")) if f"eval/{method}/loss" in r]
    assert before["step"] == 0 and after["step"] == LEARN_STEPS and before["eval/num_prompts"] >= 256
    assert before["eval/kl/seq_mean"] == 0.0 and summary["reference"] == {"mode": "none"}
    return summary, before, after


# The eval's noise: the SFT policy's held-out gold mean over 8 eval seeds (the sampling keys; 352 prompts at
# temperature 0.7, as below) measured 0.364 ± 0.025 (std). A rise must exceed twice that: the gains measured
# below are 3.5-6 times it (and, from seed 1 instead of 0, +0.119 for ORPO and +0.116 for SimPO).
GOLD_NOISE_STD = 0.025


def test_orpo_raises_held_out_gold_reward_near_the_sft_policy(trained_lab, tmp_path):
    """ORPO with the experiment's settings (λ 0.1, lr 3e-4), 50 steps: measured gold 0.320 → 0.472 (+0.152, six
    times the eval noise of 0.025) at a KL of 0.27 to the SFT policy (the NLL term keeps it close); the chosen
    responses get likelier and the odds-ratio term falls."""
    _, before, after = _learn("orpo", trained_lab, tmp_path)
    assert after["eval/reward/gold"] > before["eval/reward/gold"] + 2 * GOLD_NOISE_STD, (before, after)
    assert 0.0 < after["eval/kl/seq_mean"] < 2.0
    assert after["eval/orpo/nll"] < before["eval/orpo/nll"] and after["eval/orpo/or"] < before["eval/orpo/or"]
    assert after["eval/orpo/margin"] > before["eval/orpo/margin"] and after["eval/orpo/gold_agreement"] > 0.6


def test_simpo_raises_held_out_gold_reward_and_its_implicit_reward_accuracy(trained_lab, tmp_path):
    """SimPO (β 2, γ/β 0.5) for 50 steps at lr 1.5e-4 (the experiment's 5e-5 is for its 250 steps): measured gold
    0.320 → 0.408 (+0.088, 3.5 times the eval noise of 0.025) at a KL of 1.1; the length-normalised reward ranks
    more held-out pairs right (accuracy 0.655 → 0.68) and its margin grows."""
    _, before, after = _learn("simpo", trained_lab, tmp_path, "--config.optim.learning_rate=1.5e-4")
    assert after["eval/reward/gold"] > before["eval/reward/gold"] + 2 * GOLD_NOISE_STD, (before, after)
    assert 0.0 < after["eval/kl/seq_mean"] < 10.0
    assert after["eval/simpo/loss"] < before["eval/simpo/loss"] and after["eval/simpo/margin"] > before[
        "eval/simpo/margin"]
    assert after["eval/simpo/accuracy"] > before["eval/simpo/accuracy"] and after["eval/simpo/gold_agreement"] > 0.6
