"""Checkpoints: exact kill-and-resume, keep-last-N, restore across meshes, metrics files."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers_runtime import VOCAB, damage_checkpoint, nll_loss, tiny_cfg
from rlhfjax import parallel
from rlhfjax.models import init_params
from rlhfjax.train import (Checkpointer, TrainState, default_optim_config, make_optimizer,
                           read_jsonl, restore_or_init, train)

CFG = tiny_cfg("llama", vocab_size=VOCAB, hidden_size=32)
OPT = default_optim_config()
OPT.learning_rate, OPT.warmup_steps, OPT.total_steps, OPT.schedule = 3e-3, 2, 8, "cosine"
OPT.weight_decay, OPT.grad_accum_steps = 0.01, 2  # every update accumulates two micro-batches


class TinyIterator:
    """Deterministic iterator with the data engineer's interface: seeded per-epoch shuffle."""

    def __init__(self, seed=0, n=10, batch=4, length=10, kill_after=None):
        rng = np.random.default_rng(1234)
        self.data = rng.integers(1, VOCAB, (n, length)).astype(np.int32)
        self.seed, self.batch, self.kill_after = seed, batch, kill_after
        self.epoch, self.pos, self.served, self.ids = 0, 0, 0, []

    def _order(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))

    def __iter__(self):
        return self

    def __next__(self):
        if self.kill_after is not None and self.served == self.kill_after:
            raise KeyboardInterrupt("simulated kill")
        idx = []
        while len(idx) < self.batch:  # epochs roll over mid-batch (10 rows, batch 4)
            if self.pos == len(self.data):
                self.epoch, self.pos = self.epoch + 1, 0
            idx.append(int(self._order()[self.pos]))
            self.pos += 1
        self.served += 1
        self.ids.append(idx)
        toks = self.data[idx]
        return {"tokens": jnp.asarray(toks), "mask": jnp.ones_like(jnp.asarray(toks))}

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, d):
        self.seed, self.epoch, self.pos = d["seed"], d["epoch"], d["pos"]


TX = make_optimizer(OPT)  # shared: one compile for all runs


def fresh_state():
    return TrainState.create(init_params(CFG, jax.random.PRNGKey(0)), TX, jax.random.PRNGKey(42),
                             accum_steps=OPT.grad_accum_steps)


def assert_same_leaves(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def run(run_dir, num_steps, kill_after=None, resume=False):
    it = TinyIterator(kill_after=kill_after)
    ck = Checkpointer(os.path.join(run_dir, "ckpt"), max_to_keep=2)
    resumed = ck.latest_step()  # the loop resumes from it by itself
    assert (resumed is not None) == resume
    try:
        state, hist = train(fresh_state(), it, nll_loss, num_steps=num_steps, run_dir=run_dir,
                            loss_config=CFG, config={"optim": OPT.to_dict(), "n": num_steps},
                            checkpointer=ck, save_every=3)
    except KeyboardInterrupt:
        state, hist = None, None
    ck.close()
    return state, hist, it, ck, resumed


def test_kill_and_resume_is_exact(tmp_path):
    n = 8
    full, full_hist, full_it, _, _ = run(str(tmp_path / "a"), n)
    # Killed while fetching batch 5: steps 1..4 ran and were logged, the last checkpoint is step 3.
    _, _, killed_it, ck, _ = run(str(tmp_path / "b"), n, kill_after=4)
    assert ck.all_steps() == [3]
    assert len(read_jsonl(str(tmp_path / "b" / "metrics.jsonl"))) == 4
    # Eval samples the killed process wrote at steps 2 and 4 (after its last checkpoint, 3): the resumed run
    # keeps step 2's and drops step 4's, which it will sample again.
    samples = tmp_path / "b" / "samples.jsonl"
    samples.write_text("".join(json.dumps({"step": s, "response": f"r{s}"}) + "\n" for s in (2, 4)))
    resumed, hist, res_it, ck, resumed_from = run(str(tmp_path / "b"), n, resume=True)
    assert [r["step"] for r in read_jsonl(str(samples))] == [2]
    assert resumed_from == 3 and ck.all_steps() == [6, 8]  # keep-last-2 dropped step 3

    # Same data order: no batch skipped or repeated across the kill.
    assert killed_it.ids[:3] + res_it.ids == full_it.ids
    # Bit-identical params, optimizer state, rng and step.
    assert_same_leaves(resumed, full)
    assert int(resumed.step) == n
    # Metrics identical, each step logged exactly once in the resumed run dir.
    a = read_jsonl(str(tmp_path / "a" / "metrics.jsonl"))
    b = read_jsonl(str(tmp_path / "b" / "metrics.jsonl"))
    assert [r["step"] for r in b] == list(range(1, n + 1))
    assert a == b and hist == full_hist[-5:]
    assert json.load(open(tmp_path / "b" / "config.json"))["n"] == n
    assert os.listdir(tmp_path / "b" / "tb")  # TensorBoard event file written


def test_restore_across_meshes(tmp_path):
    state = fresh_state()
    one = Checkpointer(str(tmp_path / "one"))
    one.save(1, state, {"pos": 3}, {"k": "v"})
    one.close()

    mesh = parallel.make_mesh(_fsdp())
    t = jnp.zeros((1, 1), jnp.int32)
    from rlhfjax.models import Transformer
    shards = parallel.model_param_shardings(Transformer(CFG), (t, t, t), mesh)
    template = fresh_state()
    opt_shards = parallel.opt_state_shardings(template.tx, template.params, shards, mesh)
    rep = parallel.replicated(mesh)
    target = template.replace(params=shards, opt_state=opt_shards, step=rep, rng=rep)
    restored, data, cfg, step = one.restore(template, shardings=target)
    assert (data, cfg, step) == ({"pos": 3}, {"k": "v"}, 1)
    q = restored.params["layer_0"]["attn"]["q"]["kernel"]
    assert len(q.sharding.device_set) == 8 and q.addressable_shards[0].data.shape == (4, 32)
    assert_same_leaves(restored, state)

    eight = Checkpointer(str(tmp_path / "eight"))
    eight.save(2, restored, {}, {})
    back, _, _, _ = eight.restore(fresh_state())  # template on one device -> back to one device
    eight.close()
    assert len(back.params["layer_0"]["attn"]["q"]["kernel"].sharding.device_set) == 1
    assert_same_leaves(back, state)


def _fsdp():
    c = parallel.default_mesh_config()
    c.strategy = "fsdp"
    return c


def test_restore_without_checkpoint_is_noop(tmp_path):
    state = fresh_state()
    same, step = restore_or_init(Checkpointer(str(tmp_path / "none")), state, TinyIterator())
    assert same is state and step is None
    with pytest.raises(FileNotFoundError):
        Checkpointer(str(tmp_path / "none2")).restore(state)


def test_loop_stops_on_consecutive_nonfinite_and_keeps_last_good_checkpoint(tmp_path):
    from test_update import FROZEN, batch, quad_loss

    c = default_optim_config()
    c.learning_rate = 0.1
    tx = make_optimizer(c)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
    state = TrainState.create(params, tx, jax.random.PRNGKey(0))

    class Poisoned(TinyIterator):  # batches 3.. are NaN-producing
        def __next__(self):
            self.served += 1
            return batch(self.served, poison=self.served >= 3)

    ck = Checkpointer(str(tmp_path / "ckpt"))
    from rlhfjax.train import NonFiniteError
    with pytest.raises(NonFiniteError, match="2 consecutive"):
        train(state, Poisoned(), quad_loss, num_steps=10, run_dir=str(tmp_path), frozen=FROZEN,
              checkpointer=ck, save_every=2, max_consecutive_nonfinite=2)
    assert ck.latest_step() == 2  # the bad streak (steps 3, 4) never reached a checkpoint
    good, _, _, _ = ck.restore(TrainState.create(params, tx, jax.random.PRNGKey(0)))
    assert np.all(np.isfinite(np.asarray(good.params["w"]))) and int(good.step) == 2
    ck.close()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, how):
    """Newest checkpoint damaged (a preempted write, a full disk): one line, the previous one restored and set
    aside; metrics trimmed to it, and the run continues exactly as the uninterrupted one."""
    n = 8
    full, _, _, _, _ = run(str(tmp_path / "a"), n)
    run(str(tmp_path / "b"), 6, resume=False)  # checkpoints 3 and 6, metrics 1..6
    damage_checkpoint(str(tmp_path / "b" / "ckpt" / "6"), how)
    resumed, _, _, ck, _ = run(str(tmp_path / "b"), n, resume=True)
    out = capsys.readouterr().out
    assert "checkpoint at step 6" in out and "cannot be restored" in out
    assert "train: resumed from the checkpoint at step 3" in out
    assert os.listdir(tmp_path / "b" / "ckpt.unreadable") == ["6"]  # kept for inspection, out of orbax's way
    assert ck.all_steps() == [6, 8]
    assert_same_leaves(resumed, full)
    assert read_jsonl(str(tmp_path / "a" / "metrics.jsonl")) == read_jsonl(str(tmp_path / "b" / "metrics.jsonl"))


def test_no_readable_checkpoint_is_one_error_and_nothing_moves(tmp_path):
    from rlhfjax.errors import BadInputError

    run(str(tmp_path / "b"), 6)
    for step in ("3", "6"):
        damage_checkpoint(str(tmp_path / "b" / "ckpt" / step), "truncate")
    with pytest.raises(BadInputError, match="no readable checkpoint.*step 6: .*step 3: ") as e:
        run(str(tmp_path / "b"), 8, resume=True)
    assert "\n" not in str(e.value) and "nothing was moved or deleted" in str(e.value)
    assert sorted(os.listdir(tmp_path / "b" / "ckpt")) == ["3", "6"]
    assert not os.path.exists(tmp_path / "b" / "ckpt.unreadable")


def test_sigterm_checkpoints_the_current_step_and_the_resumed_run_is_exact(tmp_path):
    """A real SIGTERM mid-step: the step finishes, is checkpointed (off the save_every=3 schedule), the loop
    raises Preempted; resuming gives the uninterrupted run's params and metrics."""
    import signal

    from rlhfjax.errors import Preempted

    class SignalAt(TinyIterator):
        def __next__(self):
            if self.served == 4:  # while step 5 fetches its batch
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__next__()

    n = 8
    full, _, _, _, _ = run(str(tmp_path / "a"), n)
    ck = Checkpointer(str(tmp_path / "b" / "ckpt"), max_to_keep=2)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="SIGTERM after step 5") as e:
        train(fresh_state(), SignalAt(), nll_loss, num_steps=n, run_dir=str(tmp_path / "b"), loss_config=CFG,
              config={"optim": OPT.to_dict(), "n": n}, checkpointer=ck, save_every=3)
    ck.close()
    assert e.value.checkpointed and signal.getsignal(signal.SIGTERM) is handler  # the process's handler is back
    assert ck.all_steps() == [3, 5]
    resumed, _, _, _, at = run(str(tmp_path / "b"), n, resume=True)
    assert at == 5
    assert_same_leaves(resumed, full)
    assert read_jsonl(str(tmp_path / "a" / "metrics.jsonl")) == read_jsonl(str(tmp_path / "b" / "metrics.jsonl"))
