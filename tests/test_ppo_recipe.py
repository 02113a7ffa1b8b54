"""PPO-RLHF recipe: experience phases, the jitted epochs×minibatches update, logging, exact resume."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_online import make_lab

from rlhfjax import parallel
from rlhfjax.config import load_config
from rlhfjax.harness.state import PolicyState
from rlhfjax.objectives import kl_control
from rlhfjax.objectives import ppo as ppo_math
from rlhfjax.objectives.core import kl_per_token
from rlhfjax.online import runner
from rlhfjax.recipes import ppo as ppo_recipe
from rlhfjax.train import TrainState
from rlhfjax.train.metrics import read_jsonl
from rlhfjax.train.update import minibatch_update

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "toylab_ppo.py")


def copy(tree):
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_toylab):
    return make_lab(tmp_path_factory.mktemp("ppo"), shared_toylab)


def smoke_config(root, steps, *extra):
    return load_config(CONFIG + ":smoke", [*extra,
        f"--config.data.toylab_dir={root / 'toylab'}", f"--config.policy.init_from={root / 'sft'}",
        f"--config.reward.init_from={root / 'rm'}", f"--config.train.iterations={steps}",
        "--config.reward.penalise_no_eos=true", "--config.kl.estimator=k3",
        "--config.train.save_every=0"])  # checkpoint only at the last iteration of each run


def make_setup(lab, *extra):
    """The recipe's own wiring (roles, configs, optimizer) from the smoke config, so the unit tests
    and the end-to-end test share compiled phases."""
    config = smoke_config(lab, 3, *extra)
    setup, state, _ = ppo_recipe.build(config, parallel.single_device_mesh())
    tok = setup.tokenizer
    B, P = config.train.batch_size, config.data.max_prompt_len
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, len(tok), (B, P)).astype(np.int32)
    mask = np.ones((B, P), np.int32)
    for b in range(B):  # left padding of varying length
        mask[b, :b % 3] = 0
        tokens[b, :b % 3] = tok.pad_token_id
    return dict(config=config, setup=setup, adv=ppo_recipe.advantage_config(config, tok.eos_token_id),
                lcfg=ppo_recipe.loss_config(config, setup), tx=state.train.tx,
                policy=copy(state.train.params["policy"]), value=copy(state.train.params["value"]),
                rm=copy(setup.roles.reward.params), prompt=(jnp.asarray(tokens), jnp.asarray(mask)))


@pytest.fixture(scope="module")
def setup(lab):
    return make_setup(lab)


def experience(s, reference, adv=None, timed=True, fused=False):
    """`ppo_recipe.collect` with the given reference params (and advantage config)."""
    roles = s["setup"].roles
    roles = dataclasses.replace(roles, reference=dataclasses.replace(roles.reference, params=reference),
                                reward=dataclasses.replace(roles.reward, params=copy(s["rm"])))
    setup = dataclasses.replace(s["setup"], roles=roles)
    train = TrainState.create({"policy": copy(s["policy"]), "value": copy(s["value"])}, s["tx"],
                              jax.random.PRNGKey(0))
    state = PolicyState(train=train, method=kl_control.AdaptiveKL.create(), reward_gain=jnp.float32(1.0),
                        reward_bias=jnp.float32(0.0), iteration=jnp.int32(0))
    tok, mask = s["prompt"]
    return ppo_recipe.collect(state, setup, {"prompt_tokens_BxP": tok, "prompt_mask_BxP": mask},
                              jax.random.PRNGKey(3), adv_cfg=adv or s["adv"], timed=timed, fused=fused)


def first_update(s, exp):
    c = s["config"]
    state = TrainState.create({"policy": copy(s["policy"]), "value": copy(s["value"])}, s["tx"],
                              jax.random.PRNGKey(0))
    state, m = minibatch_update(state, exp["batch"], None, jax.random.PRNGKey(5), loss_fn=ppo_math.loss_fn,
                                config=s["lcfg"], epochs=c.ppo.epochs, num_minibatches=c.ppo.num_minibatches)
    assert m["loss"].shape == (c.ppo.epochs * c.ppo.num_minibatches,)
    assert int(state.step) == c.ppo.epochs * c.ppo.num_minibatches
    return state, m


def test_first_minibatch_ratio_one_and_zero_kl_at_reference(setup):
    s = setup
    assert s["setup"].sampling.temperature == 0.7 and s["adv"].kl_estimator == "k3"
    exp = experience(s, copy(s["policy"]))
    shaped, batch, ro = exp["shaped"], exp["batch"], exp["rollout"]
    # Policy == reference: the KL that enters the rewards is exactly 0, per token and per sequence.
    assert np.all(np.asarray(shaped.kl_BxT) == 0.0)
    assert float(exp["metrics"]["kl/seq_mean"]) == 0.0
    # Sampler (KV-cache, T-scaled) log-probs agree with teacher forcing on the same sequences.
    mask = np.asarray(ro.response_mask_BxN).astype(bool)
    np.testing.assert_allclose(np.asarray(ro.logp_BxN)[mask], np.asarray(batch["old_logp_BxN"])[mask], atol=2e-5)
    assert mask.sum() > mask.shape[0]  # more than one token per row, so the alignment is exercised

    state, m = first_update(s, exp)
    # First minibatch: π_θ = π_old, and (ppo.first_ratio=own_logp, the default) π_old there is the loss's own
    # log-prob, so the ratio is 1 bit for bit.
    assert float(m["ppo/ratio_min"][0]) == 1.0 and float(m["ppo/ratio_max"][0]) == 1.0
    assert float(m["ppo/approx_kl"][0]) == 0.0 and float(m["ppo/clipfrac"][0]) == 0.0
    # ... and the update moved the policy: later minibatches see a ratio != 1.
    assert float(m["ppo/approx_kl"][-1]) > 0.0


def test_fused_experience_equals_the_timed_phases_and_keeps_the_first_ratio_exact(setup):
    """ppo.time_phases=False runs scoring, log-probs, values, reference and advantages as one jit: the
    same experience as the phases one by one, and still ratio 1 bit for bit on the first minibatch."""
    reference = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(9), x.shape), setup["policy"])
    timed, fused = experience(setup, reference), experience(setup, reference, timed=False, fused=True)
    assert "time/score" in timed["metrics"] and "time/experience" in fused["metrics"]
    assert "time/score" not in fused["metrics"]
    for key, value in timed["batch"].items():
        np.testing.assert_allclose(np.asarray(fused["batch"][key]), np.asarray(value), rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    np.testing.assert_array_equal(np.asarray(fused["batch"]["old_logp_BxN"]),
                                  np.asarray(timed["batch"]["old_logp_BxN"]))
    _, m = first_update(setup, fused)
    assert float(m["ppo/ratio_min"][0]) == 1.0 and float(m["ppo/ratio_max"][0]) == 1.0


def test_the_rematerialised_way_to_an_exact_first_ratio_takes_the_same_step(setup):
    """first_ratio=remat (the loss's forward rematerialised to be the log-prob phase's computation) is exact
    on the first minibatch too, and moves the params as the default (own_logp, no remat) does."""
    exp = experience(setup, copy(setup["policy"]))
    assert setup["lcfg"].first_ratio == "own_logp" and not setup["lcfg"].remat
    base, _ = first_update(setup, exp)
    s = {**setup, "lcfg": dataclasses.replace(setup["lcfg"], first_ratio="remat", remat=True)}
    state, m = first_update(s, exp)
    assert float(m["ppo/ratio_min"][0]) == 1.0 and float(m["ppo/ratio_max"][0]) == 1.0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(base.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_chunked_logits_reach_every_role_and_take_the_same_step(setup, lab):
    """policy.logits_chunk=K: the policy's teacher-forced head runs K response positions at a time in the
    log-prob phase and the loss; the first ratio stays exactly 1 and the step is the unchunked one."""
    exp = experience(setup, copy(setup["policy"]))
    base, _ = first_update(setup, exp)
    s = make_setup(lab, "--config.policy.logits_chunk=5")
    assert s["setup"].roles.policy.cfg.logits_chunk == 5 and s["setup"].roles.reference.cfg.logits_chunk == 5
    assert s["lcfg"].policy_model.logits_chunk == 5
    chunked = experience(s, copy(s["policy"]))
    np.testing.assert_allclose(np.asarray(chunked["batch"]["old_logp_BxN"]), np.asarray(exp["batch"]["old_logp_BxN"]),
                               atol=2e-5)
    state, m = first_update(s, chunked)
    assert float(m["ppo/ratio_min"][0]) == 1.0 and float(m["ppo/ratio_max"][0]) == 1.0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(base.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # the rematerialised way to the exact first ratio holds with chunks too
    _, m = first_update({**s, "lcfg": dataclasses.replace(s["lcfg"], first_ratio="remat", remat=True)}, chunked)
    assert float(m["ppo/ratio_min"][0]) == 1.0 and float(m["ppo/ratio_max"][0]) == 1.0


def test_value_head_on_policy(lab):
    """value.model=policy_head: V is a head on the policy's own hidden states, trained through the
    shared backbone; the first minibatch's ratio is still exactly 1."""
    from rlhfjax.models import Transformer, positions_from_mask

    s = make_setup(lab, "--config.value.model=policy_head")
    assert s["lcfg"].value_model is None and set(s["value"]) == {"kernel", "bias"}
    s["value"] = {"kernel": jax.random.normal(jax.random.PRNGKey(4), s["value"]["kernel"].shape),
                  "bias": jnp.full((1,), 0.3)}
    exp = experience(s, copy(s["policy"]))
    batch = exp["batch"]
    seq, smask = batch["sequence_BxL"], batch["sequence_mask_BxL"]
    hidden = Transformer(s["setup"].roles.policy.cfg).apply({"params": s["policy"]}, seq, positions_from_mask(smask),
                                                        smask).hidden
    N = batch["response_mask_BxN"].shape[1]
    want = np.asarray(hidden)[:, -N - 1:-1] @ np.asarray(s["value"]["kernel"])[:, 0] + 0.3
    mask = np.asarray(batch["response_mask_BxN"]).astype(bool)
    np.testing.assert_allclose(np.asarray(batch["old_values_BxN"])[mask], want[mask], rtol=1e-5, atol=1e-5)
    assert "time/values" not in exp["metrics"]  # read off the policy forward, not a separate model

    state, m = first_update(s, exp)
    assert float(m["ppo/ratio_min"][0]) == 1.0 and float(m["ppo/ratio_max"][0]) == 1.0
    # With no policy-gradient signal (zero advantages), the value loss alone still moves the backbone.
    zero_adv = {**exp, "batch": {**batch, "advantages_BxN": jnp.zeros_like(batch["advantages_BxN"])}}
    state, _ = first_update(s, zero_adv)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.params["policy"], s["policy"])
    assert max(jax.tree.leaves(moved)) > 0


def test_logged_kl_is_the_kl_in_the_rewards(setup):
    s = setup
    reference = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(9), x.shape), s["policy"])
    for kind in ("k1", "k3"):
        exp = experience(s, reference, dataclasses.replace(s["adv"], kl_estimator=kind, no_eos_penalty=None))
        shaped, batch, metrics = exp["shaped"], exp["batch"], exp["metrics"]
        mask = np.asarray(batch["response_mask_BxN"]).astype(bool)
        # Independent recomputation of the per-token KL from the two log-prob tensors.
        kl = np.where(mask, np.asarray(kl_per_token(batch["old_logp_BxN"], exp["ref_logp_BxN"], kind)), 0.0)
        np.testing.assert_allclose(np.asarray(shaped.kl_BxT), kl, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(shaped.kl_seq_B), kl.sum(-1), rtol=1e-5, atol=1e-6)
        assert float(metrics["kl/seq_mean"]) == pytest.approx(float(np.mean(np.asarray(shaped.kl_seq_B))), rel=1e-6)
        assert float(metrics["kl/seq_mean"]) != 0.0
        beta = float(metrics["kl/beta"])
        assert beta == pytest.approx(0.15)
        # The rewards are −β·(that same KL) plus the score at the last response token.
        onehot = np.asarray(ppo_math.last_token_onehot(mask))
        np.testing.assert_allclose(np.asarray(shaped.rewards_BxT),
                                   -beta * kl + onehot * np.asarray(exp["raw_score_B"])[:, None], rtol=1e-5, atol=1e-6)
        # The controller observed it: β moves towards the target (KL < 6 → β shrinks).
        assert float(exp["kl_state"].coef) < beta
    assert np.all(np.asarray(shaped.kl_BxT) >= 0)  # k3 is non-negative


# --------------------------------------------------------------------------------------------
# End to end on tiny random models written to disk


NAMED = ("reward/proxy", "reward/gold", "kl/seq_mean", "kl/sqrt", "kl/beta", "policy/entropy", "ppo/clipfrac",
         "ppo/approx_kl", "value/loss", "value/explained_variance", "response/length", "time/generate",
         "time/experience", "time/update", "perf/tokens_per_s")  # ppo.time_phases=False: scoring to advantages together


def _deterministic(rows, steps=None, evals=True):
    """Rows without timings (and without eval keys: an interrupted run also evaluates at its end)."""
    drop = ("time/", "perf/") if evals else ("time/", "perf/", "eval/")
    return [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows
            if steps is None or r["step"] in steps]


def _split(rows):
    return [r for r in rows if "reward/proxy" in r], [r for r in rows if "eval/reward/proxy" in r]


def test_smoke_run_logs_metrics_and_resumes_exactly(lab):
    straight, split = lab / "straight", lab / "split"
    summary = ppo_recipe.run(smoke_config(lab, 3), str(straight))
    rows, evals = _split(read_jsonl(str(straight / "metrics.jsonl")))
    assert [r["step"] for r in rows] == [1, 2, 3]
    # Held-out evals before training and every eval_every=2 iterations + the last; the initial
    # policy is the reference, so its KL is exactly 0.
    assert [r["step"] for r in evals] == [0, 2, 3] and evals[0]["eval/kl/seq_mean"] == 0.0
    assert all(np.isfinite(r["eval/reward/gold"]) and r["eval/num_prompts"] == 16 for r in evals)
    for r in evals:  # the toy lab's behaviour metrics: components add up to gold; rates are rates
        assert r["eval/gold/helpful"] + r["eval/gold/harmless"] == pytest.approx(r["eval/reward/gold"], abs=1e-5)
        assert all(0.0 <= r[k] <= 1.0 for k in ("eval/refusal/benign", "eval/refusal/harmful",
                                                "eval/compliance/harmful") if k in r)
        assert "eval/refusal/benign" in r
    assert evals[-1]["eval/kl/seq_mean"] != 0.0 and summary["evals"] == evals
    # Evals measure KL with the training estimator (k3 here: non-negative, like the training curve).
    assert summary["kl_estimator"] == "k3" and all(r["eval/kl/seq_mean"] >= 0.0 for r in evals)
    for name in NAMED:
        assert all(np.isfinite(r[name]) for r in rows), name
    for r in rows:  # the logged KL is the one in the rewards: total = score − β·KL (per-sequence means)
        assert r["reward/total"] == pytest.approx(r["reward/score"] - r["kl/beta"] * r["kl/seq_mean"], abs=1e-4)
    assert rows[0]["kl/seq_mean"] == 0.0 and rows[0]["ppo/approx_kl_first"] == 0.0
    assert all(r["ppo/ratio_first_min"] == r["ppo/ratio_first_max"] == 1.0 for r in rows)
    assert rows[1]["kl/seq_mean"] != 0.0  # the policy moved
    assert len(summary["table"]) == 3 and set(summary["table"][0]) == {"iteration", *runner.TABLE_KEYS}
    assert os.path.exists(straight / "model" / "config.json") and os.path.exists(straight / "summary.json")
    # The run writes its reward-vs-√KL plot; one logged iteration is no curve: skipped, the run still ends.
    assert summary["plot"] == str(straight / "reward_vs_sqrt_kl.png")
    assert (straight / "reward_vs_sqrt_kl.png").read_bytes()[:4] == b"\x89PNG"

    short = ppo_recipe.run(smoke_config(lab, 1), str(split))  # "killed" after iteration 1 ...
    assert short["plot"] is None and not (split / "reward_vs_sqrt_kl.png").exists()
    ppo_recipe.run(smoke_config(lab, 3), str(split))  # ... resumed to 3
    split_rows, split_evals = _split(read_jsonl(str(split / "metrics.jsonl")))
    assert _deterministic(split_rows, evals=False) == _deterministic(rows, evals=False)
    # (the interrupted run also evaluated at its last iteration, 1)
    assert [r["step"] for r in split_evals] == [0, 1, 2, 3]
    assert _deterministic(split_evals, {0, 2, 3}) == _deterministic(evals)
    from rlhfjax.models.hf import load_pretrained

    (_, a), (_, b) = load_pretrained(str(straight / "model")), load_pretrained(str(split / "model"))
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_fsdp_mesh_matches_single_device(lab):
    """Policy, value, reference and reward params sharded FSDP over 8 devices: the same run as on one
    device (up to float reassociation in the sharded matmuls), and the params really are sharded."""
    from jax.sharding import NamedSharding, PartitionSpec as PS


    cfg = smoke_config(lab, 2)
    single = ppo_recipe.run(cfg, str(lab / "single"), parallel.single_device_mesh())
    fsdp_cfg = smoke_config(lab, 2, "--config.mesh.strategy=fsdp")
    _, state = ppo_recipe.run_with_state(fsdp_cfg, str(lab / "fsdp"), parallel.make_mesh(fsdp_cfg.mesh))
    mesh = parallel.make_mesh(fsdp_cfg.mesh)
    q = state.train.params["policy"]["layer_0"]["attn"]["q"]["kernel"]  # (embed, heads·head_dim)
    assert q.sharding.is_equivalent_to(NamedSharding(mesh, PS("fsdp", None)), q.ndim)
    assert q.addressable_shards[0].data.shape[0] == q.shape[0] // 8
    v = state.train.params["value"]["backbone"]["layer_0"]["attn"]["q"]["kernel"]
    assert v.sharding.is_equivalent_to(NamedSharding(mesh, PS("fsdp", None)), v.ndim)
    (rows_1, evals_1), (rows_8, evals_8) = (_split(read_jsonl(str(lab / d / "metrics.jsonl")))
                                            for d in ("single", "fsdp"))
    assert len(rows_1) == len(rows_8) == 2 and len(evals_1) == len(evals_8) == 2
    for a, b in zip(rows_1, rows_8):
        for k in ("reward/proxy", "reward/gold", "kl/seq_mean", "value/loss", "ppo/policy_loss", "ppo/clipfrac"):
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-5), k
    for a, b in zip(evals_1, evals_8):
        for k in ("eval/reward/proxy", "eval/reward/gold", "eval/kl/seq_mean"):
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-5), k
    assert single["final"]["step"] == 2


def test_no_eos_penalty_without_an_eos_token_is_refused(lab):
    from rlhfjax.errors import ConfigError

    config = smoke_config(lab, 1)  # penalise_no_eos=true
    with pytest.raises(ConfigError, match="penalise_no_eos"):
        ppo_recipe.advantage_config(config, eos_id=None)
    assert ppo_recipe.advantage_config(config, eos_id=2).no_eos_penalty == config.reward.no_eos_penalty
