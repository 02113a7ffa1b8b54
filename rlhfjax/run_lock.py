"""One live run per run directory: `<workdir>/run.lock`, held for the run's whole life.

Two runs in one directory (a double launch, a relaunch while the old processes still live) would interleave
their metrics and both write checkpoints. So a run takes an exclusive `flock` on `run.lock` and writes who
holds it (host, pid, start time, command) into the file; the kernel drops the flock when the holder dies,
even by kill -9. A second run on the same host finds the flock taken and stops with one line naming the
holder. A file left by a dead run on this host (the flock free, the file naming another pid) is taken over
with a warning. A file naming another host is not: `flock` cannot see across machines on most shared
filesystems, so that holder may be alive; the error says to delete the file once that run is known to be
gone. A run that ends by any exit Python sees (an error, a preemption) removes the file.

Multi-process runs: process 0 takes the lock, and every process learns the outcome (a collective), so a
refused launch stops on every host. The CLI and the notebook API (`rlhfjax.api.Run`) take it; recipes
called directly (tests, sweeps) do not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from rlhfjax.errors import UserError

LOCK_FILE = "run.lock"


class RunLockedError(UserError):
    """Another live run holds the run directory."""


def _holder_text(h: dict) -> str:
    return (f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, started {h.get('started', '?')}"
            + (f", {h['command']}" if h.get("command") else ""))


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        out = json.loads(raw.decode() or "{}")
        return out if isinstance(out, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


def acquire(workdir: str, command: str = "") -> int:
    """Lock `workdir` (created if missing) → the open lock file's descriptor, to pass to `release`. Raises
    `RunLockedError` when a live run holds it (or a run on another host may)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunLockedError(f"{workdir} is in use by another run ({_holder_text(holder)})",
                                 "wait for it to end, stop it, or use another --workdir") from None
        try:  # the file we locked may have been removed by its releasing holder meanwhile: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    holder, host = _read(fd), socket.gethostname()
    if holder.get("pid") and holder.get("host") != host:
        os.close(fd)
        raise RunLockedError(
            f"{workdir} is locked by a run on another machine ({_holder_text(holder)})",
            f"if that run has ended, delete {path} and launch again; else use another --workdir")
    if holder.get("pid") and holder.get("pid") != os.getpid():
        print(f"warning: taking over the lock of {workdir} from a run that is gone ({_holder_text(holder)})",
              file=sys.stderr, flush=True)
    mine = {"host": host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(mine) + "\n").encode())
    os.fsync(fd)
    return fd


def release(workdir: str, fd: int) -> None:
    """Remove the lock file, then drop the flock (in that order: a waiting run then locks a new file)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(workdir, LOCK_FILE))
    os.close(fd)


@contextlib.contextmanager
def hold(workdir: str, command: str = ""):
    """The lock for the body's duration (process 0 of a multi-process run; every process learns the outcome)."""
    from rlhfjax import distributed

    fd, refused = None, None
    if distributed.is_primary():
        try:
            fd = acquire(workdir, command)
        except RunLockedError as e:
            refused = e
    if distributed.agree_max(int(refused is not None)):
        raise refused or RunLockedError(f"{workdir} is in use by another run (process 0 could not lock it)",
                                        "see process 0's output")
    try:
        yield
    finally:
        if fd is not None:
            release(workdir, fd)
