"""A small reader and writer of the safetensors format, in NumPy, with errors that name the file and the tensor.

Follows the format as documented by Hugging Face (https://github.com/huggingface/safetensors, "Format"):
  bytes 0..7   N, the header length, an unsigned 64-bit little-endian integer
  bytes 8..8+N a UTF-8 JSON object: {"__metadata__": {str: str} (optional),
               name: {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
               (writers may pad it with trailing spaces; we pad to a multiple of 8 so the data stays aligned)
  the rest     the byte buffer: each tensor's raw little-endian, row-major bytes at [begin, end) relative to the
               buffer's start; the tensors tile the buffer with no gaps or overlaps.
We read F64, F32, F16, BF16 (widened to float32: NumPy has no bfloat16), I64, I32, I16, I8, U8 and BOOL, and write
all of those but BF16. The `safetensors` package is not needed; the tests check we agree with it both ways.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

# safetensors dtype name -> little-endian NumPy dtype of the stored bytes
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES: dict[np.dtype, str] = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation refuses headers over 100 MB; so do we


class SafetensorsError(ValueError):
    """A safetensors file that is truncated, corrupt, or not what its header says."""


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str], int]:
    """The tensor entries, the `__metadata__` dict, and the byte buffer's start offset of a safetensors file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: truncated safetensors file ({size} bytes; the 8-byte header length "
                                   f"is missing)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"{path}: corrupt or truncated safetensors file: the header claims {n} bytes "
                                   f"but the file has {size - 8} after the length field")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: corrupt safetensors header (not UTF-8 JSON: {e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, expected "
                               f"an object)")
    metadata = header.pop("__metadata__", None) or {}
    buffer_size = size - 8 - n
    for name, entry in header.items():
        _check_entry(path, name, entry, buffer_size)
    return header, metadata, 8 + n


def _check_entry(path: Path, name: str, entry: object, buffer_size: int) -> None:
    """Validate one header entry: known dtype, integer shape, offsets inside the buffer and matching the shape."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise SafetensorsError(f"{path}: corrupt safetensors header: entry {name!r} needs dtype, shape and "
                               f"data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPES:
        raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype!r}, which this reader does not "
                               f"support (supported: {', '.join(_DTYPES)})")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise SafetensorsError(f"{path}: corrupt safetensors header: tensor {name!r} has shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{path}: corrupt safetensors header: tensor {name!r} has data_offsets "
                               f"{offsets!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise SafetensorsError(f"{path}: tensor {name!r} of shape {tuple(shape)} and dtype {dtype} needs "
                               f"{expected} bytes, but its data_offsets {offsets} span {offsets[1] - offsets[0]}")
    if offsets[1] > buffer_size:
        raise SafetensorsError(f"{path}: truncated safetensors file: tensor {name!r} of shape {tuple(shape)} "
                               f"ends at byte {offsets[1]} of the data, which has only {buffer_size} bytes")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as NumPy arrays (native byte order; BF16 widened to float32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {str(path)!r} not found (or not a file)")
    header, _, start = read_safetensors_header(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, entry in header.items():
            stored = _DTYPES[entry["dtype"]]
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            buf = f.read(end - begin)
            arr = np.frombuffer(buf, dtype=stored).reshape(entry["shape"])
            if entry["dtype"] == "BF16":
                # bfloat16 is the top half of a float32: shift the 16 stored bits into the high half
                out[name] = (arr.astype(np.uint32) << 16).view(np.float32)
            else:
                out[name] = arr.astype(stored.newbyteorder("="))  # a writable copy in native byte order
    return out


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write NumPy arrays to a safetensors file (sorted by name, header padded to 8 bytes) and return its path."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensor name {name!r} is not allowed in a safetensors file; use a non-empty str "
                             f"other than '__metadata__'")
        arr = np.asarray(value)
        key = arr.dtype.newbyteorder("=")
        if key not in _NAMES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot hold here; convert "
                            f"it to one of float64/float32/float16/int64/int32/int16/int8/uint8/bool")
        arrays[name] = arr
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in sorted(arrays):
        arr = arrays[name]
        nbytes = arr.size * arr.dtype.itemsize
        header[name] = {"dtype": _NAMES[arr.dtype.newbyteorder("=")], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in sorted(arrays):
            arr = arrays[name]
            f.write(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())
    return path
