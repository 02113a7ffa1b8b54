"""Errors a user can fix. The CLI prints them as one line, `rlhfjax: error: <what> (<how to fix>)`,
and exits with status 2 (`--debug` shows the traceback); any other exception is a bug and raises.

Each also derives from the built-in type callers caught before (ValueError, FileNotFoundError), so
library code that catches those keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config, a path, a data file. `fix` says what to do about it."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what, self.fix = what, fix

    def __str__(self) -> str:
        return f"{self.what} ({self.fix})" if self.fix else self.what


class ConfigError(UserError, ValueError):
    """A config file, override or combination of settings that cannot run."""


class BadInputError(UserError, ValueError):
    """A file that exists but cannot be used: an unsupported or inconsistent checkpoint, say."""


class MissingPathError(UserError, FileNotFoundError):
    """A checkpoint, tokenizer or data path that does not exist."""

    def __init__(self, what: str, fix: str = ""):
        UserError.__init__(self, what, fix)


PREEMPTED_EXIT = 75  # sysexits' EX_TEMPFAIL: "try again"; a job scheduler can requeue on it


class Preempted(Exception):
    """SIGTERM or SIGINT stopped the run after `step`, and that step is checkpointed: run the same command again
    to resume. Not a user error: the CLI says so in one line and exits with `PREEMPTED_EXIT`."""

    def __init__(self, step: int, signal_name: str, checkpointed: bool = True):
        super().__init__(f"stopped by {signal_name} after step {step}: "
                         + ("checkpointed there; the same command resumes" if checkpointed else "no checkpointer"))
        self.step, self.signal_name, self.checkpointed = step, signal_name, checkpointed
