"""`rlhfjax <command> --config experiments/x.py[:variant] [--config.a.b=value ...] [--workdir DIR] [--debug]`.

Each command (`rlhfjax.commands`) is a recipe `run(config, workdir)`; the resolved config is written to
`<workdir>/config.json` before the run starts, so every run directory says what produced it.
A mistake the user can fix (`rlhfjax.errors.UserError`: a config, a missing path, bad data) ends the
run with one line on stderr and exit status 2; `--debug` shows its traceback instead. SIGTERM or SIGINT
(preemption) ends it after the current step, checkpointed, with one line and exit status 75
(`errors.PREEMPTED_EXIT`): the same command resumes. Another run already live in the run directory is
refused (`run_lock`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# transformers advises at import that PyTorch is missing; rlhfjax never needs torch.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from rlhfjax import commands  # noqa: E402
from rlhfjax.atomic_files import write_config  # noqa: E402
from rlhfjax.config import load_config, project_root, split_overrides  # noqa: E402
from rlhfjax.errors import PREEMPTED_EXIT, Preempted, UserError  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    known = commands.all_commands()
    lines = "\n".join(f"  {name:<10} {c.help}" for name, c in known.items())
    p = argparse.ArgumentParser(
        prog="rlhfjax", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog=f"commands:\n{lines}\n\nAny config field can be overridden: --config.train.steps=10")
    p.add_argument("command", choices=list(known), metavar="command")
    p.add_argument("--config", required=True, help="experiment file with get_config(), optionally :variant")
    p.add_argument("--workdir", default=None,
                   help="run directory (default: <project root>/runs/<command>-<time>; see rlhfjax.config)")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return _run(argv)
    except UserError as e:
        if debug:
            raise
        print(f"rlhfjax: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"rlhfjax: {e}", file=sys.stderr)
        return PREEMPTED_EXIT


def _run(argv: list[str]) -> int:
    overrides, rest = split_overrides(argv)
    args = _parser().parse_args(rest)
    config = load_config(args.config, overrides)
    from rlhfjax import distributed  # imports jax: after the cheap argument checks

    if distributed.initialize(config.get("distributed")) and not args.workdir:
        raise UserError("a multi-process run needs --workdir (the same directory, seen by every process)")
    workdir = args.workdir or os.path.join(project_root(args.config.partition(":")[0]), "runs",
                                           f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}")
    from rlhfjax import run_lock

    with run_lock.hold(workdir, args.command):  # one live run per directory
        if distributed.is_primary():
            write_config(workdir, config)
        print(f"rlhfjax {args.command}: run directory {workdir}", flush=True)
        commands.get(args.command).run(config, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
