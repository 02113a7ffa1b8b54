"""scripts/_study.py: a study re-run that reuses its finished runs keeps the wall times they were measured with."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import _study  # noqa: E402


def test_rerun_keeps_measured_timings(tmp_path):
    out = str(tmp_path)
    first = _study.Stages()
    first.run("a", str(tmp_path / "a"), lambda: (tmp_path / "a").mkdir() or (tmp_path / "a" / "summary.json").touch())
    results = {}
    first.record(results, out)
    _study.save_results(out, results)
    measured_a, total = results["timings_s"]["a"], results["total_s"]

    again = _study.Stages()  # "a" is finished: skipped; "b" is new
    again.run("a", str(tmp_path / "a"), lambda: (_ for _ in ()).throw(AssertionError("a finished stage reran")))
    again.record(rerun := {}, out)
    assert rerun["timings_s"] == {"a": measured_a} and rerun["total_s"] == total
    again.run("b", str(tmp_path / "b"), lambda: None)
    again.record(more := {}, out)
    assert set(more["timings_s"]) == {"a", "b"} and more["total_s"] >= total


def test_start_redraws_from_results_or_prepares_the_output_dir(tmp_path, monkeypatch):
    import argparse

    out = tmp_path / "study"
    out.mkdir()
    _study.save_results(str(out), {"total_s": 12.5})
    drawn = []
    args = argparse.Namespace(out=str(out), render=True, doc_dir=str(tmp_path / "docs"))
    assert _study.start(args, lambda results, doc_dir: drawn.append((results, doc_dir))) is None
    assert drawn == [({"total_s": 12.5}, str(tmp_path / "docs"))] and (tmp_path / "docs").is_dir()
    cached = []
    monkeypatch.setattr(_study, "compilation_cache", cached.append)  # leave this session's JAX cache alone
    args = argparse.Namespace(out=str(tmp_path / "fresh"), render=False, doc_dir=str(tmp_path / "docs"))
    assert _study.start(args, None) == str(tmp_path / "fresh") and (tmp_path / "fresh").is_dir()
    assert cached == [str(tmp_path / "fresh")]
