"""The loop's hooks (train/loop.py): when each runs, in which order, and what reaches metrics.jsonl."""

import dataclasses
import json

import pytest

from rlhfjax.train.loop import Evaluate, Hook, Log, StopAt, run_loop


@dataclasses.dataclass
class Counter:
    step: int = 0
    nonfinite_count: int = 0  # what the loop's non-finite guard reads


def step_fn(state, step):
    assert step == state.step + 1
    return Counter(step), {"loss": float(step)}


class Record(Hook):
    def __init__(self, every, calls):
        self.every, self.calls = every, calls

    def __call__(self, info):
        self.calls.append((info.step, info.last, info.evaluated))


@pytest.mark.parametrize("stop_at, end", [(0, 10), (5, 5)])
def test_hooks_run_at_their_steps_in_order(tmp_path, stop_at, end):
    evals, calls = [], []

    def evaluate(state):
        evals.append(state.step)
        return {"eval/step": state.step}

    log = Log(str(tmp_path), every=3, config={"n": 10})
    state = run_loop(Counter(), step_fn, num_steps=10, hooks=[
        StopAt(stop_at), Evaluate(evaluate, every=4, at_start=True), log, Record(5, calls)])
    assert state.step == end
    want_evals = [s for s in (0, 4, 8) if s <= end] + ([end] if end % 4 else [])
    assert evals == want_evals
    # Logged: the initial eval (step 0), this process's first step, every 3rd, every evaluated step, the last.
    want_logged = sorted({0, 1, *range(3, end + 1, 3), *want_evals, end})
    assert [r["step"] for r in log.records] == want_logged
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows == log.records and all(("eval/step" in r) == (r["step"] in want_evals) for r in rows)
    assert json.load(open(tmp_path / "config.json")) == {"n": 10}
    # A hook after Evaluate sees the step as evaluated; every hook is due at the last step.
    assert calls == [(s, s == end, s in want_evals) for s in sorted({*range(5, end + 1, 5), end})]


def test_a_resumed_run_starts_after_the_restored_step_and_the_first_step_is_logged(tmp_path):
    class Restore(Hook):
        def resume(self, state):
            return Counter(6), 6

    log = Log(str(tmp_path), every=100)
    state = run_loop(Counter(), step_fn, num_steps=8, hooks=[Restore(), log])
    assert state.step == 8 and [r["step"] for r in log.records] == [7, 8]


def test_the_non_finite_guard_runs_before_a_due_hook(tmp_path):
    from rlhfjax.train import NonFiniteError

    def bad_step(state, step):
        return Counter(step, nonfinite_count=step), {}

    calls = []
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        run_loop(Counter(), bad_step, num_steps=10, hooks=[Record(3, calls)], max_consecutive_nonfinite=3)
    assert calls == []  # the hook due at step 3 never saw the bad state
