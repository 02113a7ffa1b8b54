"""One process of a multi-process test run: `python helpers_multiprocess.py SPEC_JSON`.

SPEC: {"commands": [[command, config, workdir, *overrides], ...], "port": int, "num_processes": int,
"process_id": int, "die_after_step": int | null}. The commands go through the CLI's own entry point in one
Python process (`jax.distributed` is joined once), e.g. SFT and then PPO from the SFT export.
`die_after_step` k: the process ends abruptly (`os._exit`, no clean-up, as if killed) right after
logging step k (of the first command that reaches it), so a test can restart every process and check the resume.
"""

from __future__ import annotations

import json
import os
import sys


def main(spec: dict) -> int:
    from rlhfjax import cli
    from rlhfjax.train import metrics

    die = spec.get("die_after_step")
    if die:
        write = metrics.MetricsWriter.write

        def write_then_die(self, step, values):
            out = write(self, step, values)
            if step == die:
                sys.stdout.flush()
                os._exit(17)
            return out

        metrics.MetricsWriter.write = write_then_die
    extra = []
    if spec["num_processes"] > 1:
        extra = [f"--config.distributed.coordinator_address=localhost:{spec['port']}",
                 f"--config.distributed.num_processes={spec['num_processes']}",
                 f"--config.distributed.process_id={spec['process_id']}",
                 "--config.distributed.initialization_timeout=120"]
    for command, config, workdir, *overrides in spec["commands"]:
        status = cli.main([command, "--config", config, "--workdir", workdir, *overrides, *extra])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
