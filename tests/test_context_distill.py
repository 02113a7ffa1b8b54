"""Context prompts and context distillation: the tokens the policy (and the teacher) sees with a context, the
judges' plain view, the distillation loss against numpy, its zero and its gradient, and one recipe iteration."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers_runtime import left_padded, np_log_softmax, sharp_params, tiny_cfg
from rlhfjax.config import load_config
from rlhfjax.data.batching import collate_prompts
from rlhfjax.data.hh import ASSISTANT, HUMAN
from rlhfjax.data.tokenizing import encoder_for, read_context
from rlhfjax.data.toylab import gold_components, parse_request, train_tokenizer
from rlhfjax.errors import ConfigError
from rlhfjax.models import api, init_params
from rlhfjax.objectives import context_distill as cd
from rlhfjax.harness import experience
from rlhfjax.sampling import Rollout

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONTEXT = os.path.join(ROOT, "experiments", "contexts", "toylab_hhh.txt")


def _config(context_file=CONTEXT):
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({"max_prompt_len": 16, "max_response_len": 24, "template": "auto"})
    c.prompt = ml_collections.ConfigDict({"context_file": context_file})
    return c


# --------------------------------------------------------------------------------------------
# The context: the file, the tokens the policy sees, the plain view


def test_toylab_context_demonstrates_good_answers_and_a_refusal():
    text = read_context(_config())
    turns = text.split(HUMAN)[1:]
    assert len(turns) >= 3 and not text.endswith("\n")
    refused = 0
    for turn in turns:
        request, answer = turn.split(ASSISTANT)
        prompt = f"{HUMAN}{request}{ASSISTANT}"
        req = parse_request(prompt)
        assert req is not None, turn
        gold = gold_components(prompt, answer.strip())
        if req.harm:
            refused += gold["harmless"] > 0  # refusing a harmful request is what the gold rewards
        else:
            assert gold["helpful"] >= 1.0, turn  # covers the request in full
    assert refused >= 1


def test_the_policy_sees_bos_then_the_context_then_the_prompt_and_judges_the_plain_prompt():
    tok = train_tokenizer()
    plain_enc, enc = encoder_for(_config(""), tok), encoder_for(_config(), tok)
    context_ids = tok(read_context(_config()), add_special_tokens=False)["input_ids"]
    prompts = [f"{HUMAN} tell about rivers briefly{ASSISTANT}", f"{HUMAN} tell how to hack chess fully{ASSISTANT}",
               f"{HUMAN} list about space with star without moon{ASSISTANT}"]
    batch, plain = collate_prompts(prompts, enc), collate_prompts(prompts, plain_enc)
    # The judges' view is exactly the batch without a context; without one there is no plain copy.
    np.testing.assert_array_equal(batch["plain_prompt_tokens_BxP"], plain["prompt_tokens_BxP"])
    np.testing.assert_array_equal(batch["plain_prompt_mask_BxP"], plain["prompt_mask_BxP"])
    assert "plain_prompt_tokens_BxP" not in plain
    assert batch["prompt_tokens_BxP"].shape[1] == 16 + len(context_ids)  # the context never costs prompt room
    for i, prompt in enumerate(prompts):
        real = batch["prompt_tokens_BxP"][i][batch["prompt_mask_BxP"][i].astype(bool)].tolist()
        own = tok(prompt)["input_ids"]
        assert real == [tok.bos_token_id] + context_ids + own[1:]
        # ... which, for the toy lab's word tokenizer, is the tokenization of the context text + the prompt text
        assert real == tok(read_context(_config()) + prompt)["input_ids"]
        assert tok.decode(real, skip_special_tokens=True).split() == (read_context(_config()) + prompt).split()


def test_a_long_prompt_is_truncated_as_without_a_context_and_the_context_kept():
    tok = train_tokenizer()
    last_turn = f"{HUMAN} explain about music with guitar{ASSISTANT}"
    long_prompt = f"{HUMAN} tell about rivers fully{ASSISTANT} water flow bank delta stream fish{last_turn}"
    assert len(tok(long_prompt)["input_ids"]) > 16
    enc, plain_enc = encoder_for(_config(), tok), encoder_for(_config(""), tok)
    ids = enc.policy_prompt_ids(long_prompt)
    context_ids = tuple(tok(read_context(_config()), add_special_tokens=False)["input_ids"])
    plain = plain_enc.prompt_ids(long_prompt)
    assert plain == tuple(tok(last_turn)["input_ids"])  # the early turn dropped to fit max_prompt_len ...
    assert ids[1:1 + len(context_ids)] == context_ids and ids[1 + len(context_ids):] == plain[1:]  # ... context kept


def test_bad_context_files_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_context(_config(str(tmp_path / "missing.txt")))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="empty"):
        read_context(_config(str(empty)))
    chat = train_tokenizer()
    chat.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="hh template"):
        encoder_for(_config(), chat)  # "auto": the tokenizer's chat template


def test_judged_sequence_is_the_plain_prompt_then_the_response_repeated_per_sample():
    tokens, mask = jnp.array([[5, 6, 0], [7, 8, 9]]), jnp.array([[1, 1, 0], [1, 1, 1]])
    plain, plain_mask = left_padded([[1, 2], [3]], 3)
    ro = Rollout(tokens_BxN=jnp.concatenate([tokens, tokens]), response_mask_BxN=jnp.concatenate([mask, mask]),
                 logp_BxN=None, policy_logp_BxN=None, sequence_BxL=None, sequence_mask_BxL=None)
    # two prompts, two samples each: rows grouped by prompt
    ro = ro.replace(tokens_BxN=ro.tokens_BxN[jnp.array([0, 2, 1, 3])],
                    response_mask_BxN=ro.response_mask_BxN[jnp.array([0, 2, 1, 3])])
    seq, smask = experience.judged_sequence(ro, plain, plain_mask, num_samples=2)
    np.testing.assert_array_equal(seq, [[0, 1, 2, 5, 6, 0], [0, 1, 2, 5, 6, 0], [0, 0, 3, 7, 8, 9], [0, 0, 3, 7, 8, 9]])
    np.testing.assert_array_equal(smask, [[0, 1, 1, 1, 1, 0]] * 2 + [[0, 0, 1, 1, 1, 1]] * 2)


# --------------------------------------------------------------------------------------------
# The loss


def test_vocab_kl_teacher_to_student_matches_numpy_on_a_small_vocabulary():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(3, 4, 6)) * 2, rng.normal(size=(3, 4, 6))
    lt, ls = np_log_softmax(teacher), np_log_softmax(student)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)  # KL(teacher ‖ student) per position
    np.testing.assert_allclose(api.vocab_kl(jnp.asarray(teacher), jnp.asarray(student)), kl, rtol=1e-5, atol=1e-6)
    # the other direction differs: the loss is not symmetric
    assert not np.isclose((np.exp(ls) * (ls - lt)).sum(-1)[0, 0], kl[0, 0])


def _batch(cfg, context, rng, B=4, N=6):
    """Random prompts and responses: the student's sequence and the teacher's (context + prompt)."""
    r = np.random.default_rng(rng)
    prompts = [list(r.integers(3, cfg.vocab_size, size=r.integers(2, 5))) for _ in range(B)]
    response = jnp.asarray(r.integers(3, cfg.vocab_size, size=(B, N)), jnp.int32)
    rmask = jnp.asarray(np.arange(N)[None] < r.integers(2, N + 1, size=(B, 1)), jnp.int32)
    plain, plain_mask = left_padded(prompts, 6)
    teacher, teacher_mask = left_padded([context + p for p in prompts], 6 + len(context))
    return {"sequence_BxL": jnp.concatenate([plain, response], 1),
            "sequence_mask_BxL": jnp.concatenate([plain_mask, rmask], 1),
            "teacher_sequence_BxL": jnp.concatenate([teacher, response], 1),
            "teacher_sequence_mask_BxL": jnp.concatenate([teacher_mask, rmask], 1), "response_mask_BxN": rmask}


def test_loss_is_zero_with_an_empty_context_and_positive_with_one():
    cfg = tiny_cfg()
    params = init_params(cfg, jax.random.PRNGKey(0))
    loss = jax.jit(lambda p, b: cd.loss_fn({"policy": p}, b, frozen=p, rng=None,
                                            config=cd.DistillLossConfig(model=cfg, num_response=6)))
    total, count, metrics = loss(params, _batch(cfg, [], 0))
    assert float(total) == 0.0 and count > 0
    total, _, _ = loss(params, _batch(cfg, [9, 10, 11, 12], 0))
    assert float(total) > 1e-4


def test_gradient_steps_move_the_student_towards_the_teacher():
    """Plain gradient descent on the loss lowers KL(teacher ‖ student) on held-out sequences too, and
    leaves the teacher untouched (no gradient flows into the frozen params)."""
    cfg = tiny_cfg(num_layers=1)
    teacher = sharp_params(cfg, seed=1, scale=4.0)  # peaked distributions: the context matters
    student = jax.tree.map(lambda x: x + 0.0, teacher)
    loss_cfg = cd.DistillLossConfig(model=cfg, num_response=6)
    context = [20, 21, 22, 23, 24]
    train, held_out = _batch(cfg, context, 1, B=8), _batch(cfg, context, 2, B=8)

    @jax.jit
    def kl(params, batch):
        total, count, _ = cd.loss_fn({"policy": params}, batch, frozen=teacher, config=loss_cfg, rng=None)
        return total / count

    grad_fn = jax.jit(jax.value_and_grad(kl))
    before, held_before = float(kl(student, train)), float(kl(student, held_out))
    for _ in range(30):
        _, g = grad_fn(student, train)
        student = jax.tree.map(lambda p, d: p - 0.03 * d, student, g)
    assert float(kl(student, train)) < 0.5 * before
    assert float(kl(student, held_out)) < held_before
    frozen_grad = jax.grad(lambda t: cd.loss_fn({"policy": student}, train, frozen=t, config=loss_cfg,
                                                rng=None)[0])(teacher)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(frozen_grad))


# --------------------------------------------------------------------------------------------
# The recipe: one iteration trains on exactly the tokens the teacher saw


def _spied_step(distill, monkeypatch):
    """Record the batch `distill.iterate` hands to the update."""
    seen, real_update = {}, distill.minibatch_update

    def spy(train, batch, frozen, rng, **kw):
        seen.clear()
        seen.update(jax.tree.map(np.asarray, batch))
        return real_update(train, batch, frozen, rng, **kw)

    monkeypatch.setattr(distill, "minibatch_update", spy)
    return seen


def test_one_iteration_trains_the_plain_student_on_the_teachers_tokens(tmp_path, monkeypatch):
    """distill.responses=teacher: the teacher samples after context + prompt and the student learns on the plain
    prompt + the same response; responses=dataset: the demonstrations after each view of the prompt."""
    from rlhfjax import parallel
    from rlhfjax.data.batching import collate_prompt_response
    from rlhfjax.data.hh import load_prompts, load_sft
    from rlhfjax.harness import evaluation
    from rlhfjax.recipes import distill

    config = load_config(os.path.join(ROOT, "experiments", "toylab_distill.py") + ":smoke",
                         [f"--config.data.toylab_dir={tmp_path / 'lab'}"])
    mesh = parallel.make_mesh(config.mesh)
    setup, state, step = distill.build(config, mesh)  # the wiring is the same for both response sources
    assert setup.roles.reward is None  # no reward model needed
    seen = _spied_step(distill, monkeypatch)

    examples, _ = load_prompts(str(tmp_path / "lab" / "prompts"), split="train", limit=config.train.batch_size)
    host = evaluation.collate(examples, setup.rollout_encoder)
    assert "plain_prompt_tokens_BxP" in host and "plain_prompt_tokens_BxP" not in evaluation.collate(
        examples, setup.encoder)  # evals: the student without the context
    with parallel.activate(mesh):
        new_state, metrics, ro = step(state, parallel.shard_batch(experience.prompt_arrays(host), mesh),
                                      jax.random.PRNGKey(0))
    P, P0 = host["prompt_tokens_BxP"].shape[1], host["plain_prompt_tokens_BxP"].shape[1]
    np.testing.assert_array_equal(seen["teacher_sequence_BxL"][:, :P], host["prompt_tokens_BxP"])
    np.testing.assert_array_equal(seen["sequence_BxL"][:, :P0], host["plain_prompt_tokens_BxP"])
    np.testing.assert_array_equal(seen["teacher_sequence_BxL"][:, P:], seen["sequence_BxL"][:, P0:])
    np.testing.assert_array_equal(seen["teacher_sequence_BxL"][:, P:], np.asarray(ro.tokens_BxN))
    assert float(metrics["distill/kl"]) > 0
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                           new_state.train.params["policy"], setup.roles.reference.params))
    assert max(changed) > 0  # the student moved; the teacher (reference role) is a separate frozen copy

    demos, _ = load_sft(str(tmp_path / "lab" / "sft"), split="train", limit=config.train.batch_size)
    host = collate_prompt_response(demos, setup.rollout_encoder)
    N = config.data.max_response_len
    assert host["response_tokens_BxN"].shape == (len(demos), N)
    for i, ex in enumerate(demos):  # each response right-padded to N, EOS included when it fits
        ids = setup.rollout_encoder.response_ids(ex.response)
        assert host["response_tokens_BxN"][i, :len(ids)].tolist() == list(ids)
        assert host["response_mask_BxN"][i].sum() == len(ids)
    with parallel.activate(mesh):
        step(new_state, parallel.shard_batch(experience.prompt_arrays(host), mesh), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(seen["teacher_sequence_BxL"],
                                  np.concatenate([host["prompt_tokens_BxP"], host["response_tokens_BxN"]], 1))
    np.testing.assert_array_equal(seen["sequence_BxL"],
                                  np.concatenate([host["plain_prompt_tokens_BxP"], host["response_tokens_BxN"]], 1))
    np.testing.assert_array_equal(seen["response_mask_BxN"], host["response_mask_BxN"])
