"""The online runner serves a sample-N method as well as PPO: N completions per prompt kept in groups,
the reward model's best of each group kept, an NLL step on it (rejection-sampling fine-tuning, i.e.
SuperHF without its KL prior), with gold on grouped rows, evals and exact resume."""

import functools
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_online import make_lab
from helpers_runtime import damage_checkpoint

from rlhfjax import parallel
from rlhfjax.config import load_config
from rlhfjax.errors import Preempted
from rlhfjax.models import api
from rlhfjax.harness import experience
from rlhfjax.online import runner
from rlhfjax.train import update
from rlhfjax.train.metrics import read_jsonl

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "toylab_ppo.py")
N = 3  # completions per prompt


def kept_nll(params, batch, *, frozen, config, rng):
    """Summed NLL of the kept completions' response tokens (a (sum, count) token loss)."""
    del frozen, rng
    total, count = api.response_logp(params["policy"], config, batch["sequence_BxL"], batch["sequence_mask_BxL"],
                                     batch["response_mask_BxL"])
    return -jnp.sum(total), jnp.sum(count), {}


def best_of_groups(rollout, score_R, n):
    """Row index of the highest-scoring completion in each group of n consecutive rows."""
    groups = score_R.reshape(-1, n)
    return jnp.arange(groups.shape[0]) * n + jnp.argmax(groups, axis=1)


def iterate(state, prompts, rng, *, setup, seen, signal_at=0):
    ro, score = experience.sample_and_score(
        state.train.params["policy"], setup.roles.reward.params, prompts["prompt_tokens_BxP"],
        prompts["prompt_mask_BxP"], rng, policy_cfg=setup.roles.policy.cfg, reward_cfg=setup.roles.reward.cfg,
        sampling=setup.sampling, num_samples=N)
    keep = best_of_groups(ro, score, N)
    P = prompts["prompt_tokens_BxP"].shape[1]
    response_mask = jnp.pad(ro.response_mask_BxN, ((0, 0), (P, 0)))
    batch = {"sequence_BxL": ro.sequence_BxL[keep], "sequence_mask_BxL": ro.sequence_mask_BxL[keep],
             "response_mask_BxL": response_mask[keep]}
    train, metrics = update(state.train, batch, kept_nll, None, setup.roles.policy.cfg)
    seen.append((np.asarray(ro.sequence_BxL), np.asarray(score), np.asarray(keep)))
    if len(seen) == signal_at:  # a real preemption notice, mid-iteration
        os.kill(os.getpid(), signal.SIGTERM)
    metrics = {**metrics, "reward/proxy": jnp.mean(score[keep]), "reward/proxy_all": jnp.mean(score)}
    return state.replace(train=train), metrics, ro


def run(lab, workdir, iterations, seen, signal_at=0):
    config = load_config(CONFIG + ":smoke", [
        f"--config.data.toylab_dir={lab / 'toylab'}", f"--config.policy.init_from={lab / 'sft'}",
        f"--config.reward.init_from={lab / 'rm'}", f"--config.train.iterations={iterations}",
        "--config.train.batch_size=4", "--config.train.save_every=0", "--config.reward.normalise=false",
        "--config.optim.learning_rate=1e-2"])
    setup = runner.prepare(config, parallel.single_device_mesh(), with_value=False)
    assert setup.roles.value is None
    state = runner.create_state(setup, {"policy": setup.roles.policy.params}, {"policy": setup.roles.policy.shardings},
                                total_steps=iterations)
    step = functools.partial(iterate, setup=setup, seen=seen, signal_at=signal_at)
    return runner.run_online(setup, str(workdir), state, step, name="best-of-n-sft")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_toylab):
    return make_lab(tmp_path_factory.mktemp("online"), shared_toylab)


def test_sample_n_method_on_the_runner(lab):
    seen = []
    summary, state = run(lab, lab / "straight", 3, seen)
    seq, score, keep = seen[0]
    assert seq.shape[0] == 4 * N
    prompts = seq[:, :16].reshape(4, N, 16)
    assert (prompts == prompts[:, :1]).all()  # each prompt's N completions are consecutive rows
    np.testing.assert_array_equal(keep, np.arange(4) * N + score.reshape(4, N).argmax(1))
    rows = read_jsonl(str(lab / "straight" / "metrics.jsonl"))
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:  # the best of N scores at least the mean of N; gold was computed on all 4·N rows
        assert r["reward/proxy"] >= r["reward/proxy_all"] and np.isfinite(r["reward/gold"])
        assert r["loss/count"] > 0 and r["optim/step_skipped"] == 0.0
    assert [r["step"] for r in rows if "eval/reward/proxy" in r] == [0, 2, 3]
    assert int(state.iteration) == 3 and os.path.exists(lab / "straight" / "model" / "config.json")
    assert summary["final"]["step"] == 3 and os.path.exists(lab / "straight" / "samples.jsonl")

    # SIGTERM during iteration 2: it finishes, is checkpointed (save_every=0: off schedule) and the run stops;
    # the same call resumes from there and ends as the uninterrupted run.
    with pytest.raises(Preempted, match="SIGTERM after step 2"):
        run(lab, lab / "split", 3, [], signal_at=2)
    assert sorted(os.listdir(lab / "split" / "checkpoints")) == ["2"]
    _, resumed = run(lab, lab / "split", 3, [])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.train.params),
                 jax.device_get(state.train.params))
    # The newest checkpoint truncated: one line, step 2 restored, step 3 run again to the same params.
    damage_checkpoint(str(lab / "split" / "checkpoints" / "3"), "truncate")
    _, again = run(lab, lab / "split", 3, [])
    assert os.listdir(lab / "split" / "checkpoints.unreadable") == ["3"]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.train.params),
                 jax.device_get(state.train.params))
    untimed = lambda path: [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))}  # noqa: E731
                            for r in read_jsonl(str(path / "metrics.jsonl"))]
    assert untimed(lab / "split") == untimed(lab / "straight")


def test_eval_reports_the_gold_means_standard_error(lab, tmp_path):
    """eval/reward/gold_se is std(gold, ddof=1) / √n over every held-out sample the eval scored (numpy)."""
    import dataclasses

    config = load_config(CONFIG + ":smoke", [
        f"--config.data.toylab_dir={lab / 'toylab'}", f"--config.policy.init_from={lab / 'sft'}",
        f"--config.reward.init_from={lab / 'rm'}", "--config.train.eval_every=1", "--config.data.eval_limit=24",
        "--config.train.eval_batch_size=8"])
    setup = runner.prepare(config, parallel.single_device_mesh(), with_value=False)
    scored = []

    def gold(prompts, responses):
        out = setup.gold_fn(prompts, responses)
        scored.append(np.asarray(out))
        return out

    judge = dataclasses.replace(runner.evaluator(setup, str(tmp_path)), gold_fn=gold)
    metrics = judge(setup.roles.policy.params, 1.0, 0.0, 0)
    golds = np.concatenate(scored)
    assert golds.size == metrics["eval/num_prompts"] >= 16 and golds.std() > 0
    assert metrics["eval/reward/gold"] == pytest.approx(golds.mean(), rel=1e-6)
    assert metrics["eval/reward/gold_se"] == pytest.approx(golds.std(ddof=1) / np.sqrt(golds.size), rel=1e-6)
