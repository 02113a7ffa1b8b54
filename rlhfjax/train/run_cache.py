"""Things a run computes once from its inputs and keeps in its directory, so a resumed or repeated run reuses
them: e.g. DPO's reference log-prob column (one pass of the reference over the dataset) and a proxy reward's
normaliser (fitted on the initial policy's samples).

Each is a set of arrays in one .npz file together with the key it was computed under (a fingerprint of the data,
the weights and the settings that matter). A different key means different inputs: it is computed again and
replaces the file. Written atomically by the primary process; every process computes it (the computation may be
collective) and reads it back.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Callable

import jax
import numpy as np

from rlhfjax import distributed
from rlhfjax.atomic_files import atomic_open

KEY = "key"  # the stored key's entry in the .npz


def params_fingerprint(cfg, host_params) -> str:
    """A content checksum of a model (architecture + per-leaf path, shape, sum and sum of squares): part of the key
    of what is computed from its weights."""
    digest = hashlib.sha256(repr(cfg).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(host_params):
        x = np.asarray(leaf, np.float64)
        digest.update(f"{jax.tree_util.keystr(path)}{x.shape}{x.sum():.17g}{np.square(x).sum():.17g}".encode())
    return digest.hexdigest()


def computed_once(path: str, key: str, compute: Callable[[], dict], *, what: str) -> tuple[dict, dict]:
    """The arrays stored at `path` if they were computed under `key`, else `compute()` → {name: array}, stored
    there. Returns (arrays, info for a summary: file, key, reused, seconds)."""
    t0 = time.time()
    why = "nothing stored"
    if os.path.exists(path):
        with np.load(path) as stored:
            if KEY in stored.files and str(stored[KEY]) == key:
                print(f"{what}: reusing {path}", flush=True)
                arrays = {k: stored[k] for k in stored.files if k != KEY}
                return arrays, {"file": path, "key": key, "reused": True, "seconds": 0.0}
        why = "what it was computed from differs"
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    if KEY in arrays:
        raise ValueError(f"{what}: {KEY!r} is reserved for the stored key")
    if distributed.is_primary():
        with atomic_open(path, "wb") as f:
            np.savez(f, **{KEY: np.array(key)}, **arrays)
    seconds = round(time.time() - t0, 1)
    print(f"{what}: computed ({why}) in {seconds} s -> {path}", flush=True)
    return arrays, {"file": path, "key": key, "reused": False, "seconds": seconds}
