"""Pieces every study script shares: the machine line, a persistent compilation cache, and the doc
writer that keeps the hand-written prose below the generated part on re-runs."""

from __future__ import annotations

import os
import platform

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


def write_doc(path: str, generated: str) -> None:
    """`generated` + MARKER + whatever followed the marker in the existing doc (the prose by hand)."""
    tail = "\n"
    if os.path.exists(path):
        text = open(path).read()
        if MARKER in text:
            tail = text.split(MARKER, 1)[1]
    with open(path, "w") as f:
        f.write(generated.rstrip("\n") + "\n\n" + MARKER + tail)
