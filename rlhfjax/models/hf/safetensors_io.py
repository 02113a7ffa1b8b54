"""Minimal safetensors reader/writer on numpy (with ml_dtypes for bf16/fp8).

Why our own: the `safetensors` numpy backend cannot represent bfloat16, and going through the
flax backend would put every tensor on the default device. This reader memory-maps the file, so
a sharded multi-GB checkpoint is read tensor by tensor on the host.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping

import ml_dtypes
import numpy as np

from rlhfjax.atomic_files import atomic_open

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile(Mapping):
    """Read-only mapping name -> np.ndarray over one .safetensors file (lazy, memory-mapped)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        self._offset = 8 + n
        self._mmap = np.memmap(path, dtype=np.uint8, mode="r")

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        if e["dtype"] not in _DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {e['dtype']}")
        start, end = e["data_offsets"]
        raw = self._mmap[self._offset + start:self._offset + end]
        return raw.view(_DTYPES[e["dtype"]]).reshape(e["shape"])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def write(path: str, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None):
    """Write tensors atomically (tmp file + rename) in the safetensors layout."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    arrays = {}
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _NAMES:
            raise ValueError(f"cannot write tensor {name!r} of dtype {arr.dtype}")
        arrays[name] = arr
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format wants the data 8-byte aligned
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays.values():
            f.write(arr.tobytes())
