"""DPO / IPO / conservative DPO: the losses against numpy and at initialisation, the precomputed reference
column against on-the-fly reference log-probs, bad pairs skipped and counted, and the `dpo` recipe end to end
(exact resume, the column reused, local HH-format files, a reward model for the proxy)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_online import make_lab
from helpers_runtime import damage_checkpoint

from rlhfjax import parallel
from rlhfjax.cli import main
from rlhfjax.config import load_config
from rlhfjax.data.batching import BatchIterator, Encoder, TokenizeConfig, collate_pairs
from rlhfjax.data.examples import PreferencePair
from rlhfjax.data.hh import load_hh
from rlhfjax.errors import ConfigError
from rlhfjax.data.tokenizing import load_tokenizer
from rlhfjax.models.hf import load_pretrained
from rlhfjax.objectives import dpo as D
from rlhfjax.harness.roles import load_roles
from rlhfjax.offline import reference
from rlhfjax.recipes import dpo as recipe
from rlhfjax.train.metrics import read_jsonl

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "toylab_dpo.py")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_toylab):
    """A toy lab with a random tiny policy (sft/) and reward model (rm/) on disk."""
    return make_lab(tmp_path_factory.mktemp("dpo"), shared_toylab)


@pytest.fixture(scope="module")
def model(lab):
    """(cfg, params on one device, encoder, 12 toy-lab pairs)."""
    cfg, host = load_pretrained(str(lab / "sft"))
    encoder = Encoder(load_tokenizer(str(lab / "toylab" / "tokenizer")),
                      TokenizeConfig(max_prompt_len=16, max_response_len=16))
    pairs, _ = load_hh(str(lab / "toylab" / "comparisons"), data_dir="mixed", split="train", limit=12)
    return cfg, jax.tree.map(jnp.asarray, host), encoder, pairs


# --------------------------------------------------------------------------------------------
# The losses


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_losses_and_metrics_match_numpy_on_random_logps(beta):
    rng = np.random.default_rng(0)
    logp_c, logp_r, ref_c, ref_r = (rng.normal(-30, 8, size=64).astype(np.float32) for _ in range(4))
    delta = (logp_c - ref_c) - (logp_r - ref_r)
    jd = jnp.asarray(delta)
    np.testing.assert_allclose(D.dpo_loss(jd, beta), -_np_log_sigmoid(beta * delta), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.ipo_loss(jd, beta), (delta - 1 / (2 * beta)) ** 2, rtol=1e-5)
    for eps in (0.1, 0.3):
        want = -(1 - eps) * _np_log_sigmoid(beta * delta) - eps * _np_log_sigmoid(-beta * delta)
        np.testing.assert_allclose(D.cdpo_loss(jd, beta, eps), want, rtol=1e-5, atol=1e-6)
        config = D.DPOLossConfig(None, loss="cdpo", beta=beta, label_smoothing=eps)
        np.testing.assert_allclose(D.per_pair_loss(jd, config), want, rtol=1e-5, atol=1e-6)
    # Metrics: means over the valid pairs only (the last 4 rows do not count).
    valid = np.ones(64, np.float32)
    valid[-4:] = 0
    terms = {"valid_B": valid, "delta_B": delta, "drift_chosen_B": logp_c - ref_c, "drift_rejected_B": logp_r - ref_r,
             "logp_chosen_B": logp_c, "logp_rejected_B": logp_r}
    config = D.DPOLossConfig(None, beta=beta)
    got = D.pair_metrics(terms, D.per_pair_loss(jd, config), config)
    v = valid > 0
    r_c, r_r = beta * (logp_c - ref_c)[v], beta * (logp_r - ref_r)[v]
    want = {"dpo/loss": np.mean(-_np_log_sigmoid(beta * delta[v])), "dpo/accuracy": np.mean(r_c > r_r),
            "dpo/margin": np.mean(r_c - r_r), "dpo/reward_chosen": np.mean(r_c), "dpo/reward_rejected": np.mean(r_r),
            "dpo/logp_drift_chosen": np.mean((logp_c - ref_c)[v]),
            "dpo/logp_drift_rejected": np.mean((logp_r - ref_r)[v]),
            "dpo/logp_chosen": np.mean(logp_c[v]), "dpo/logp_rejected": np.mean(logp_r[v])}
    assert set(got) == set(want)
    for k in want:
        assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-5, abs=1e-5), k


def test_loss_config_refuses_settings_that_cannot_go_together(tmp_path, capsys):
    with pytest.raises(ConfigError, match="dpo, ipo, cdpo"):
        D.DPOLossConfig(None, loss="kto")
    with pytest.raises(ConfigError, match="label_smoothing"):
        D.DPOLossConfig(None, loss="cdpo")  # ε = 0: that is plain DPO
    with pytest.raises(ConfigError, match="loss=cdpo"):
        D.DPOLossConfig(None, loss="dpo", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="beta"):
        D.DPOLossConfig(None, loss="ipo", beta=0.0)
    # Through the CLI: one line, status 2, before any data or model is loaded.
    assert main(["dpo", "--config", f"{CONFIG}:smoke", "--workdir", str(tmp_path / "run"),
                 "--config.dpo.loss=ipo", "--config.dpo.label_smoothing=0.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhfjax: error: dpo.label_smoothing=0.2") and "\n" not in err


def _batch(model, pairs=None):
    cfg, params, encoder, all_pairs = model
    return collate_pairs(pairs or all_pairs[:8], encoder)


def test_at_initialisation_dpo_and_cdpo_give_log2_and_ipo_one_over_four_beta_squared(model):
    """Policy = reference: Δ = 0 exactly, whether the reference comes as frozen params or as a column."""
    cfg, params, _, _ = model
    batch = _batch(model)
    ref_c, ref_r = jax.jit(D.reference_logps, static_argnums=2)(params, batch, cfg)
    with_column = {**batch, D.REF_KEYS[0]: ref_c, D.REF_KEYS[1]: ref_r}
    for on_the_fly, b in ((True, batch), (False, with_column)):
        config = D.DPOLossConfig(cfg, loss="dpo", beta=0.1, reference_on_the_fly=on_the_fly)
        frozen = params if on_the_fly else None
        terms = jax.jit(lambda p, b, f: D.pair_terms(p, b, frozen=f, config=config))(params, b, frozen)  # noqa: B023
        assert np.all(np.asarray(terms["delta_B"]) == 0.0)
        step = jax.jit(lambda p, b, f: D.loss_fn(p, b, frozen=f, config=config, rng=None))  # noqa: B023
        total, count, metrics = step(params, b, frozen)
        assert float(count) == 8 and float(total) / 8 == pytest.approx(np.log(2), rel=1e-6)
        assert float(metrics["dpo/accuracy"]) == 0.5 and float(metrics["dpo/margin"]) == 0.0
        for loss, eps, beta, want in [("dpo", 0.0, 0.1, np.log(2)), ("cdpo", 0.2, 0.1, np.log(2)),
                                      ("ipo", 0.0, 0.1, 1 / (4 * 0.1 ** 2)), ("ipo", 0.0, 0.5, 1.0)]:
            other = D.DPOLossConfig(cfg, loss=loss, beta=beta, label_smoothing=eps)
            per_pair = np.asarray(D.per_pair_loss(terms["delta_B"], other))
            assert np.all(per_pair == np.float32(want)), (loss, eps, beta, per_pair)


def test_loss_fn_sums_real_pairs_and_a_pair_without_response_tokens_weighs_nothing(model):
    cfg, params, _, _ = model
    batch = _batch(model)
    batch["row_mask_B"][7] = 0  # a padding row
    batch["rejected_response_mask_BxT"][6] = 0  # a pair whose rejected response lost every token
    rng = np.random.default_rng(1)
    batch[D.REF_KEYS[0]], batch[D.REF_KEYS[1]] = (rng.normal(-40, 5, 8).astype(np.float32) for _ in range(2))
    config = D.DPOLossConfig(cfg, loss="dpo", beta=0.1)
    total, count, metrics = jax.jit(lambda p: D.loss_fn(p, batch, frozen=None, config=config, rng=None))(params)
    logp_c, logp_r, _, _ = jax.jit(D.pair_logps, static_argnums=2)(params, batch, cfg)
    delta = (np.asarray(logp_c) - batch[D.REF_KEYS[0]]) - (np.asarray(logp_r) - batch[D.REF_KEYS[1]])
    assert float(count) == 6
    assert float(total) == pytest.approx(float(np.sum(-_np_log_sigmoid(0.1 * delta[:6]))), rel=1e-5)
    assert float(metrics["dpo/margin"]) == pytest.approx(float(np.mean(0.1 * delta[:6])), rel=1e-4, abs=1e-6)
    grads = jax.jit(jax.grad(lambda p: D.loss_fn(p, batch, frozen=None, config=config, rng=None)[0]))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_ipo_normalise_mean_divides_each_responses_log_ratio_by_its_token_count(model):
    """IPO's two forms against numpy: Δ of summed log-ratios (Azar et al., Eq. 17) or per-token means (TRL's)."""
    cfg, params, _, _ = model
    batch = _batch(model)
    batch["row_mask_B"][7] = 0
    rng = np.random.default_rng(2)
    batch[D.REF_KEYS[0]], batch[D.REF_KEYS[1]] = (rng.normal(-40, 5, 8).astype(np.float32) for _ in range(2))
    logp_c, logp_r, n_c, n_r = (np.asarray(x) for x in jax.jit(D.pair_logps, static_argnums=2)(params, batch, cfg))
    assert len(set(n_c[:7].tolist()) | set(n_r[:7].tolist())) > 1  # responses of different lengths
    drift_c, drift_r = logp_c - batch[D.REF_KEYS[0]], logp_r - batch[D.REF_KEYS[1]]
    beta = 0.3
    for how, delta in (("sum", drift_c - drift_r), ("mean", drift_c / n_c - drift_r / n_r)):
        config = D.DPOLossConfig(cfg, loss="ipo", beta=beta, ipo_normalise=how)
        total, count, _ = jax.jit(lambda p: D.loss_fn(p, batch, frozen=None, config=config, rng=None))(params)  # noqa: B023
        want = np.sum((delta[:7] - 1 / (2 * beta)) ** 2)
        assert float(count) == 7 and float(total) == pytest.approx(float(want), rel=1e-5), how
    with pytest.raises(ConfigError, match="only applies to dpo.loss='ipo'"):
        D.DPOLossConfig(None, loss="dpo", ipo_normalise="mean")
    with pytest.raises(ConfigError, match="sum, mean"):
        D.DPOLossConfig(None, loss="ipo", ipo_normalise="token")


# --------------------------------------------------------------------------------------------
# The reference column


def test_precomputed_reference_logps_equal_the_on_the_fly_ones(model):
    """The column (one pass, batches of 8 in dataset order) fed by example index to shuffled batches of 4
    holds what the reference computes on those very batches, and the loss is the same either way."""
    cfg, params, encoder, pairs = model
    mesh = parallel.single_device_mesh()
    collate = functools.partial(collate_pairs, encoder=encoder)
    examples = reference.Examples(pairs, "", {})
    with parallel.activate(mesh):  # 12 pairs in batches of 8: one padded batch
        column = reference.reference_column(D.reference_column, params, cfg, examples, collate, 8, mesh)
    assert set(column) == set(D.REF_KEYS) and all(v.shape == (12,) for v in column.values())
    it = BatchIterator(list(range(12)), 4, reference.indexed_collate(pairs, collate, column), seed=3, num_epochs=1)
    precomputed = D.DPOLossConfig(cfg, beta=0.1)
    on_the_fly = D.DPOLossConfig(cfg, beta=0.1, reference_on_the_fly=True)
    policy = jax.tree.map(lambda x: x * 1.01, params)  # a policy that has moved away from the reference
    for _ in range(3):
        batch = next(it)
        ref_c, ref_r = D.reference_logps(params, batch, cfg)
        np.testing.assert_allclose(batch[D.REF_KEYS[0]], ref_c, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(batch[D.REF_KEYS[1]], ref_r, rtol=1e-5, atol=1e-4)
        a = D.loss_fn(policy, batch, frozen=None, config=precomputed, rng=None)
        b = D.loss_fn(policy, batch, frozen=params, config=on_the_fly, rng=None)
        assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-5) and float(a[1]) == float(b[1])


def test_the_stored_column_is_reused_only_under_the_same_fingerprint(tmp_path):
    path, calls = str(tmp_path / reference.REFERENCE_FILE), []

    def compute(value):
        def f():
            calls.append(value)
            return {"train_chosen": np.full(3, value, np.float32), "train_rejected": np.zeros(3, np.float32)}
        return f

    cols, info = reference.reference_columns(path, "A", compute(1.0))
    assert calls == [1.0] and not info["reused"] and os.listdir(tmp_path) == [reference.REFERENCE_FILE]
    cols, info = reference.reference_columns(path, "A", compute(2.0))
    assert calls == [1.0] and info["reused"] and np.all(cols["train_chosen"] == 1.0)
    cols, info = reference.reference_columns(path, "B", compute(3.0))  # another dataset or reference
    assert calls == [1.0, 3.0] and not info["reused"] and np.all(cols["train_chosen"] == 3.0)


def test_pairs_that_cannot_teach_after_truncation_are_skipped_and_counted(model):
    _, _, encoder, pairs = model
    short = Encoder(encoder.tokenizer, TokenizeConfig(max_prompt_len=16, max_response_len=2, add_eos=False))
    p = pairs[0].prompt
    good = next(x for x in pairs if short.response_ids(x.chosen) != short.response_ids(x.rejected))
    odd = [PreferencePair(p, "the the the", "the the"),  # identical once cut to 2 tokens
           PreferencePair(p, "", "the the"),  # no token at all (no EOS added)
           good]
    kept = reference.usable_pairs(odd, short, "t")
    assert kept.items == odd[2:]
    assert kept.skipped == {reference.IDENTICAL: 1, reference.EMPTY_RESPONSE: 1}
    # The fingerprint is of the kept pairs' token ids, in order.
    assert reference.usable_pairs(odd[::-1], short, "t").digest == kept.digest
    assert (reference.usable_pairs(pairs[:2], encoder, "t").digest
            != reference.usable_pairs(pairs[1::-1], encoder, "t").digest)
    with pytest.raises(ConfigError, match="no usable pairs"):
        reference.usable_pairs(odd[:2], short, "t")


def test_execution_settings_reach_the_policy_and_the_reference_kept_on_the_host(lab):
    """DPO's roles come from `load_roles`: policy.logits_chunk / scan_layers reach policy and reference however
    they are made, and the reference's params stay host arrays (placed only while the evals sample)."""
    mesh = parallel.make_mesh(None)
    for init_from in (str(lab / "sft"), ""):
        config = load_config(f"{CONFIG}:smoke", [f"--config.data.toylab_dir={lab / 'toylab'}",
                                                 f"--config.policy.init_from={init_from}",
                                                 "--config.policy.logits_chunk=4", "--config.policy.scan_layers=true"])
        roles = load_roles(config, mesh, 64, with_value=False, reward_optional=True, reference_on_host=True)
        assert roles.reward is None
        for role in (roles.policy, roles.reference):
            assert (role.cfg.logits_chunk, role.cfg.scan_layers) == (4, True)
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(roles.policy.params))
        assert not any(isinstance(x, jax.Array) for x in jax.tree.leaves(roles.reference.params))
        for a, b in zip(jax.tree.leaves(roles.policy.params), jax.tree.leaves(roles.reference.params)):
            np.testing.assert_array_equal(np.asarray(a), b)


# --------------------------------------------------------------------------------------------
# The recipe


def _config(lab, *extra):
    return load_config(f"{CONFIG}:smoke", [
        f"--config.data.toylab_dir={lab / 'toylab'}", f"--config.policy.init_from={lab / 'sft'}",
        "--config.optim.learning_rate=1e-2", "--config.optim.total_steps=4", "--config.train.save_every=0", *extra])


def _params(workdir):
    return jax.tree.leaves(load_pretrained(os.path.join(workdir, "model"))[1])


@pytest.fixture(scope="module")
def straight(lab, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dpo_straight"))
    return workdir, recipe.run(_config(lab), workdir, parallel.single_device_mesh())


def test_run_writes_metrics_evals_column_and_model(straight):
    workdir, summary = straight
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    evals = [r for r in rows if "eval/dpo/loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    first = evals[0]  # the initial policy is the reference
    assert first["eval/dpo/loss"] == pytest.approx(np.log(2), abs=1e-6) and first["eval/kl/seq_mean"] == 0.0
    assert first["eval/dpo/logp_drift_chosen"] == 0.0 and first["eval/dpo/accuracy"] == 0.5
    for r in evals:
        for key in ("eval/dpo/accuracy", "eval/dpo/margin", "eval/dpo/logp_drift_chosen",
                    "eval/dpo/logp_drift_rejected", "eval/dpo/gold_agreement", "eval/reward/gold", "eval/kl/seq_mean",
                    "eval/response/length", "eval/distinct_1", "eval/meteor_similarity", "eval/gold/helpful",
                    "eval/gold/harmless", "eval/refusal/benign"):
            assert np.isfinite(r[key]), key
        assert "eval/reward/proxy" not in r  # no reward model given
    train = rows[1]
    # Step 1's loss is taken at the reference (Δ = 0 up to the rounding of a differently batched forward).
    assert train["loss"] == pytest.approx(np.log(2), abs=1e-5)
    assert {"dpo/margin", "dpo/logp_drift_chosen", "dpo/logp_drift_rejected", "dpo/reward_chosen"} <= set(train)
    assert evals[-1]["eval/kl/seq_mean"] > 0  # lr 1e-2: the policy moved
    with np.load(os.path.join(workdir, reference.REFERENCE_FILE)) as f:
        assert f["train_ref_chosen_logp_B"].shape == (64,) and f["eval_ref_rejected_logp_B"].shape == (16,)
    assert summary["reference"]["mode"] == "precomputed" and not summary["reference"]["reused"]
    assert summary["train_pairs"] == 64 and summary["init"]["step"] == 0 and summary["final"]["step"] == 4
    samples = [json.loads(x) for x in open(os.path.join(workdir, "samples.jsonl"))]
    assert {s["step"] for s in samples} == {0, 2, 4} and all("gold" in s for s in samples)
    assert len(_params(workdir)) > 0


def test_resumed_run_continues_identically_and_reuses_the_column(lab, straight, tmp_path):
    straight_dir, _ = straight
    resumed = str(tmp_path / "resumed")
    recipe.run(_config(lab, "--config.train.steps=2"), resumed, parallel.single_device_mesh())
    summary = recipe.run(_config(lab), resumed, parallel.single_device_mesh())
    assert summary["reference"]["reused"]
    assert all(np.array_equal(a, b) for a, b in zip(_params(straight_dir), _params(resumed)))
    assert read_jsonl(os.path.join(straight_dir, "metrics.jsonl")) == read_jsonl(os.path.join(resumed, "metrics.jsonl"))
    # The final checkpoint's array files deleted (a disk cleaned by hand, a copy cut short): the run falls back to
    # step 2, trims its logs there and ends where the uninterrupted run did.
    damage_checkpoint(os.path.join(resumed, "checkpoints", "4"), "delete")
    recipe.run(_config(lab), resumed, parallel.single_device_mesh())
    assert os.listdir(os.path.join(resumed, "checkpoints.unreadable")) == ["4"]
    assert all(np.array_equal(a, b) for a, b in zip(_params(straight_dir), _params(resumed)))
    assert read_jsonl(os.path.join(straight_dir, "metrics.jsonl")) == read_jsonl(os.path.join(resumed, "metrics.jsonl"))


def test_local_hh_files_with_bad_pairs_a_reward_model_and_the_reference_on_the_fly(lab, tmp_path):
    """HH-format local files (no toy lab): a pair that is identical once truncated is skipped and counted,
    the reward model adds a normalised proxy reward, the reference stays on the device (no column), the
    policy is exported."""
    data = tmp_path / "hh"
    data.mkdir()
    pairs, _ = load_hh(str(lab / "toylab" / "comparisons"), data_dir="mixed", split="train", limit=40)
    rows = [{"chosen": f"{p.prompt} {p.chosen}", "rejected": f"{p.prompt} {p.rejected}"} for p in pairs]
    long = " river" * 30  # both responses are cut to max_response_len inside this run of words
    rows[3] = {"chosen": f"{pairs[3].prompt} {pairs[3].chosen}{long} yes",
               "rejected": f"{pairs[3].prompt} {pairs[3].chosen}{long} no"}
    for split, part in (("train", rows[:32]), ("test", rows[32:])):
        with open(data / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    config = load_config(f"{CONFIG}:smoke", [
        f"--config.data.source={data}", "--config.data.data_dir=", "--config.data.max_response_len=24",
        f"--config.tokenizer.path={lab / 'toylab' / 'tokenizer'}", f"--config.policy.init_from={lab / 'sft'}",
        f"--config.reward.init_from={lab / 'rm'}", "--config.reward.norm_batches=1", "--config.train.steps=2",
        "--config.train.batch_size=4", "--config.eval.prompt_limit=8", "--config.eval.batch_size=4",
        "--config.dpo.reference_on_the_fly=true"])
    workdir = str(tmp_path / "run")
    summary = recipe.run(config, workdir, parallel.single_device_mesh())
    assert summary["skipped"]["train"] == {reference.IDENTICAL: 1} and summary["train_pairs"] == 31
    assert summary["reference"] == {"mode": "on_the_fly"}
    assert not os.path.exists(os.path.join(workdir, reference.REFERENCE_FILE))
    rows_out = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    evals = [r for r in rows_out if "eval/reward/proxy" in r]
    assert [r["step"] for r in evals] == [0, 2] and "eval/reward/gold" not in evals[0]
    assert evals[0]["eval/dpo/loss"] == pytest.approx(np.log(2), abs=1e-6) and evals[0]["eval/kl/seq_mean"] == 0.0
    # The normaliser is fitted once and carried in the checkpointed state, as the online methods keep it.
    normaliser = summary["reward_normaliser"]
    assert normaliser["fitted"] and (normaliser["gain"], normaliser["bias"]) != (1.0, 0.0)
    assert len(_params(workdir)) > 0


def test_fsdp_with_accumulation_matches_one_device(lab, straight, tmp_path):
    """On config.mesh like every recipe: FSDP over the 8 test devices, 2 micro-batches per step, the same run."""
    straight_dir, _ = straight
    workdir = str(tmp_path / "fsdp")
    recipe.run(_config(lab, "--config.mesh.strategy=fsdp", "--config.optim.grad_accum_steps=2",
                       "--config.eval.prompt_limit=0"), workdir)
    assert len(jax.devices()) == 8
    for a, b in zip(_params(straight_dir), _params(workdir)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    one, fsdp = (read_jsonl(os.path.join(d, "metrics.jsonl")) for d in (straight_dir, workdir))
    assert [r["step"] for r in one] == [r["step"] for r in fsdp]
    for x, y in zip(one, fsdp):
        for key in ("loss", "dpo/margin", "eval/dpo/loss", "eval/dpo/margin", "eval/dpo/logp_drift_chosen"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-5), (x["step"], key)
