"""`rlhfjax <command> --config experiments/x.py[:variant] [--config.a.b=value ...] [--workdir DIR]`.

Each command is a recipe `run(config, workdir)`; the resolved config is written to
`<workdir>/config.json` before the run starts, so every run directory says what produced it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from rlhfjax.config import ConfigError, load_config, save_config, split_overrides

# command -> (module with run(config, workdir), one-line description). Grows as objectives land.
COMMANDS: dict[str, tuple[str, str]] = {
    "lm": ("rlhfjax.recipes.lm", "train or fine-tune a causal LM on plain text, print samples"),
    "sft": ("rlhfjax.recipes.sft", "supervised fine-tuning on (prompt, response) demonstrations"),
    "rm": ("rlhfjax.recipes.rm", "preference model: ranked | binary | imitation objectives, PMP"),
    "pmp": ("rlhfjax.recipes.pmp", "preference-model pre-training on generic comparisons, then fine-tuning"),
    "ppo": ("rlhfjax.recipes.ppo", "PPO-RLHF: policy + value, per-token KL to the reference, GAE, adaptive KL"),
    "ood": ("rlhfjax.recipes.ood", "OOD detection: Mahalanobis / relative Mahalanobis AUROC on prompt activations"),
}


def _parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="rlhfjax", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog=f"commands:\n{lines}\n\nAny config field can be overridden: --config.train.steps=10")
    p.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    p.add_argument("--config", required=True, help="experiment file with get_config(), optionally :variant")
    p.add_argument("--workdir", default=None, help="run directory (default: runs/<command>-<time>)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        overrides, rest = split_overrides(argv)
    except ConfigError as e:
        print(f"rlhfjax: error: {e}", file=sys.stderr)
        return 2
    args = _parser().parse_args(rest)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"rlhfjax: error: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir or os.path.join("runs", f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}")
    save_config(config, workdir)
    print(f"rlhfjax {args.command}: run directory {workdir}", flush=True)
    module = importlib.import_module(COMMANDS[args.command][0])
    module.run(config, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
