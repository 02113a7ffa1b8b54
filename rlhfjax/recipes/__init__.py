"""Runnable recipes behind the CLI commands: `run(config, workdir) -> summary dict`."""
