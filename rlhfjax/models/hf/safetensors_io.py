"""Minimal safetensors reader/writer on numpy (with ml_dtypes for bf16/fp8).

Why our own: the `safetensors` numpy backend cannot represent bfloat16, and going through the
flax backend would put every tensor on the default device. This reader memory-maps the file, so
a sharded multi-GB checkpoint is read tensor by tensor on the host.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping

import ml_dtypes
import numpy as np

from rlhfjax.atomic_files import atomic_open
from rlhfjax.errors import BadInputError

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


_REFETCH = "re-download or re-save the checkpoint"


class SafetensorsFile(Mapping):
    """Read-only mapping name -> np.ndarray over one .safetensors file (lazy, memory-mapped).

    Opening checks the header against the file size (a truncated or non-safetensors file is a
    `BadInputError` naming the file and the first tensor it cuts off); no tensor data is read."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise BadInputError(f"{path}: truncated or not a safetensors file ({size} bytes, shorter than "
                                    "the 8-byte header length)", _REFETCH)
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise BadInputError(f"{path}: truncated or not a safetensors file (its header claims {n} bytes "
                                    f"but the file has {size})", _REFETCH)
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadInputError(f"{path}: unreadable safetensors header ({e})", _REFETCH) from e
        if not isinstance(header, dict):
            raise BadInputError(f"{path}: unreadable safetensors header (not a JSON object)", _REFETCH)
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        self._offset = 8 + n
        self._check_entries(size - self._offset)
        self._mmap = np.memmap(path, dtype=np.uint8, mode="r")

    def _check_entries(self, data_bytes: int):
        """Every entry well formed, its byte range the size its shape and dtype say, inside the file."""
        cut = []
        for name, e in self._entries.items():
            try:
                start, end = (int(x) for x in e["data_offsets"])
                shape = tuple(int(d) for d in e["shape"])
                dtype = e["dtype"]
            except (KeyError, TypeError, ValueError) as err:
                raise BadInputError(f"{self.path}: unreadable safetensors header entry for tensor {name!r} "
                                    f"({type(err).__name__}: {err})", _REFETCH) from err
            if dtype in _DTYPES and end - start != math.prod(shape) * _DTYPES[dtype].itemsize:
                raise BadInputError(f"{self.path}: tensor {name!r} has shape {shape} of {dtype} but "
                                    f"{end - start} bytes of data", _REFETCH)
            if end > data_bytes:
                cut.append((start, name))
        if cut:
            start, name = min(cut)
            more = f" (and {len(cut) - 1} more)" if len(cut) > 1 else ""
            raise BadInputError(f"{self.path}: truncated safetensors file ({self._offset + data_bytes} bytes): the "
                                f"data of tensor {name!r}{more} is cut off", _REFETCH)

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        if e["dtype"] not in _DTYPES:
            raise BadInputError(f"{self.path}: tensor {name!r} has dtype {e['dtype']}, which rlhfjax cannot read",
                                f"supported: {', '.join(_DTYPES)}")
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
