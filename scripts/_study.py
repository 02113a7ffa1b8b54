"""Pieces every study script shares: the machine line, a persistent compilation cache, and the doc
writer that keeps the hand-written prose below the generated part on re-runs."""

from __future__ import annotations

import json
import os
import platform
import time

MARKER = "<!-- end of generated part -->"


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.default_backend()}"


def compilation_cache(out: str) -> None:
    """Re-runs (and `--render`) skip XLA compiles: a persistent cache under the study's output dir."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def start(args, render) -> str | None:
    """The study's output dir (`args.out`), created and given a compilation cache; None when `args.render`
    asked only to redraw the doc and plots: `render(results, args.doc_dir)` from `<out>/results.json`."""
    out = os.path.abspath(args.out)
    os.makedirs(args.doc_dir, exist_ok=True)
    if args.render:
        render(load_results(out), args.doc_dir)
        return None
    os.makedirs(out, exist_ok=True)
    compilation_cache(out)
    return out


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (studies run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sqrt_kl(kl: float) -> float:
    """√KL for the x axis; a slightly negative estimate (k1 on few samples) plots at 0."""
    return max(kl, 0.0) ** 0.5


def write_doc(path: str, generated: str) -> None:
    """`generated` + MARKER + whatever followed the marker in the existing doc (the prose by hand)."""
    tail = "\n"
    if os.path.exists(path):
        text = open(path).read()
        if MARKER in text:
            tail = text.split(MARKER, 1)[1]
    with open(path, "w") as f:
        f.write(generated.rstrip("\n") + "\n\n" + MARKER + tail)


def finished(workdir: str) -> bool:
    """A run directory whose run finished (it writes summary.json last)."""
    return os.path.exists(os.path.join(workdir, "summary.json"))


class Stages:
    """A study's runs: each is skipped when its directory is `finished`, else run and timed."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.t0 = time.time()

    def run(self, name: str, workdir: str, fn) -> None:
        if finished(workdir):
            return
        t = time.time()
        fn()
        self.timings[name] = round(time.time() - t, 1)
        print(f"== {name}: {self.timings[name]} s", flush=True)

    def record(self, results: dict, out: str | None = None) -> None:
        """Stage timings and total wall time into `results`. With `out`, stages reused from an earlier
        invocation keep the timings that invocation measured (from `<out>/results.json`), and the total
        adds up the invocations that did work, so a re-run that only re-renders keeps the real numbers."""
        prev = {}
        if out and os.path.exists(os.path.join(out, "results.json")):
            prev = load_results(out)
        elapsed = round(time.time() - self.t0, 1)
        results["timings_s"] = {**prev.get("timings_s", {}), **self.timings}
        results["total_s"] = prev["total_s"] + (elapsed if self.timings else 0.0) if "total_s" in prev else elapsed


def load_results(out: str) -> dict:
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def save_results(out: str, results: dict) -> None:
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
