"""Atomic writes: a reader (or a resumed run) sees a file or directory whole, old or new, never half written.

Everything the package writes that a later step trusts by its presence — summaries, configs, metrics logs,
cached reference columns, exported checkpoints, the labelling rounds of `rlhfjax iterate` — goes through
here: written at a temporary sibling, then moved over the target with one `os.replace`.
"""

from __future__ import annotations

import contextlib
import os
import shutil


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path` to write a file or a directory at; when the block ends without an
    error it replaces `path` in one rename (a directory only where `path` does not exist yet, as POSIX
    renames allow), and on an error the partial write is removed and the error raised."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **open_kwargs):
    """`open(path, mode, **open_kwargs)` for writing, made atomic with `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_config(directory: str, config) -> str:
    """The resolved config (an ml_collections ConfigDict or a dict) as `<directory>/config.json`: what produced
    the run directory it sits in. Atomic; returns its path."""
    import json

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "config.json")
    payload = config.to_dict() if hasattr(config, "to_dict") else config
    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    return path
