"""Time `rlhfjax.config.load_config` of experiment files, each in a fresh Python process (the cost a user pays
before any run starts: `rlhfjax <command> --config ...`, `rlhfjax.api.config(...)`), and say which heavy
packages that imported.

    python scripts/bench_config_load.py                       # every experiments/*.py, 5 processes each
    python scripts/bench_config_load.py --repeats 9 experiments/toylab_ppo.py experiments/toylab_iterate.py

Prints a markdown table (docs/benchmarks.md, "Loading a config"): median and range of the wall time of
`load_config` in the process (interpreter start-up excluded), and the packages among jax, flax, optax,
datasets and transformers found in `sys.modules` afterwards.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HEAVY = ("jax", "flax", "optax", "datasets", "transformers")
PROBE = """
import json, sys, time
t = time.perf_counter()
from rlhfjax.config import load_config
load_config(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t, "imported": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def measure(path: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = [r["seconds"] for r in runs]
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "imported": runs[-1]["imported"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help="experiment files (default: every experiments/*.py)")
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per file")
    args = p.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))
    print("| experiment file | load_config, s (median, range) | heavy packages imported |")
    print("|---|---|---|")
    for path in files:
        m = measure(path, args.repeats)
        print(f"| `{os.path.relpath(path, ROOT)}` | {m['median']:.2f} ({m['min']:.2f}–{m['max']:.2f}) | "
              f"{', '.join(m['imported']) or 'none'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
