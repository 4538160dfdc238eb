"""A small GGUF (v2/v3) parser: metadata as Python values, tensor bytes as zero-copy views of an mmap.

gguf-py's GGUFReader builds numpy views for every string of a 50k-token vocabulary and takes seconds;
this reads the same header with `struct` in a fraction of that, and reports what is wrong with bad files.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from vivace.engine.loaders.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError

GGUF_MAGIC = b"GGUF"
KV_START = 24  # magic, version (u32), tensor count (u64), key-value count (u64), then the pairs
_DEFAULT_ALIGNMENT = 32
# GGUF value type id -> (struct format, numpy dtype) for scalars; 8 = string, 9 = array.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "?"),
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    """Internal: a read ran past the end of the file."""


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor's header entry; `shape` is in torch order (GGUF lists dims innermost first)."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    n_bytes: int


class GGUFFile:
    """A parsed GGUF file: `metadata`, `tensors`, and `tensor_bytes(info)` views into the mapped file."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.isfile(path):
            what = "is a directory, not a GGUF file" if os.path.isdir(path) else "does not exist"
            raise ModelNotFoundError(f"model file {path} {what}")
        self.size = os.path.getsize(path)
        if self.size == 0:
            raise CorruptModelError(f"{path} is empty (0 bytes); re-download or re-convert the model")
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[:4] != GGUF_MAGIC:
            raise CorruptModelError(
                f"{path} is not a GGUF file: it starts with {bytes(self._map[:4])!r}, not {GGUF_MAGIC!r}"
            )
        self._pos = 4
        try:
            self.metadata, self.tensors = self._parse()
        except _Truncated:
            raise CorruptModelError(
                f"{path} is truncated: its header runs past the end of the file ({self.size:,} bytes)"
            ) from None
        except (UnicodeDecodeError, struct.error, ValueError, OverflowError, MemoryError) as exc:
            raise CorruptModelError(f"{path} has a corrupt GGUF header at byte {self._pos:,}: {exc}") from exc

    def tensor_bytes(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's raw bytes as uint8 [rows, bytes per row] (no copy)."""
        rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
        flat = np.frombuffer(self._map, dtype=np.uint8, count=info.n_bytes, offset=info.offset)
        return flat.reshape(rows, info.n_bytes // rows)

    def _parse(self) -> tuple[dict[str, Any], list[GGUFTensorInfo]]:
        version = self._scalar("<I")
        if version not in (2, 3):
            if version < 256:  # a real (older or newer) version number
                raise UnsupportedModelError(f"{self.path}: GGUF version {version} is not supported; expected 2 or 3")
            raise CorruptModelError(
                f"{self.path}: GGUF version field reads {version}; the header is corrupt (or big-endian, unsupported)"
            )
        tensor_count, kv_count = self._scalar("<Q"), self._scalar("<Q")
        if tensor_count > self.size or kv_count > self.size:
            raise CorruptModelError(f"{self.path}: implausible header counts ({tensor_count} tensors, {kv_count} keys)")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self._string()
            metadata[key] = self._value(self._scalar("<I"))
        self.metadata_end = self._pos  # the key-value pairs are bytes [KV_START, metadata_end)
        infos = []
        for _ in range(tensor_count):
            name = self._string()
            dims = [self._scalar("<Q") for _ in range(self._scalar("<I"))]
            type_id, offset = self._scalar("<I"), self._scalar("<Q")
            infos.append((name, dims, type_id, offset))
        alignment = int(metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        data_start = -(-self._pos // alignment) * alignment
        return metadata, [
            self._tensor_info(name, dims, type_id, data_start + offset) for name, dims, type_id, offset in infos
        ]

    def _tensor_info(self, name: str, dims: list[int], type_id: int, offset: int) -> GGUFTensorInfo:
        try:
            tensor_type = GGMLQuantizationType(type_id)
        except ValueError:
            raise CorruptModelError(f"{self.path}: tensor {name!r} has unknown ggml type id {type_id}") from None
        block_values, block_bytes = GGML_QUANT_SIZES[tensor_type]
        count = int(np.prod(dims)) if dims else 1
        if dims and dims[0] % block_values:
            raise CorruptModelError(
                f"{self.path}: tensor {name!r} row of {dims[0]} values is not a whole number of "
                f"{tensor_type.name} blocks ({block_values})"
            )
        n_bytes = count // block_values * block_bytes
        if offset + n_bytes > self.size:
            raise CorruptModelError(
                f"{self.path} is truncated: tensor {name!r} needs bytes up to {offset + n_bytes:,} "
                f"but the file has {self.size:,}"
            )
        return GGUFTensorInfo(name, tensor_type, tuple(reversed(dims)), offset, n_bytes)

    def _take(self, n: int) -> int:
        start = self._pos
        if n < 0 or start + n > self.size:
            raise _Truncated
        self._pos = start + n
        return start

    def _scalar(self, fmt: str) -> Any:
        return struct.unpack_from(fmt, self._map, self._take(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        return self._strings(1)[0]

    def _strings(self, count: int) -> list[str]:
        """`count` length-prefixed strings (a vocabulary, merges) in one tight loop."""
        data, pos, size, out = self._map, self._pos, self.size, []
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise _Truncated
            (length,) = unpack(data, pos)
            end = pos + 8 + length
            if end > size:
                raise _Truncated
            out.append(data[pos + 8 : end].decode("utf-8"))
            pos = end
        self._pos = pos
        return out

    def _value(self, type_id: int) -> Any:
        if type_id in _SCALARS:
            return self._scalar(_SCALARS[type_id][0])
        if type_id == _STRING:
            return self._string()
        if type_id == _ARRAY:
            item_type, count = self._scalar("<I"), self._scalar("<Q")
            if item_type in _SCALARS:
                dtype = np.dtype(_SCALARS[item_type][1])
                start = self._take(count * dtype.itemsize)
                return np.frombuffer(self._map, dtype=dtype, count=count, offset=start).tolist()
            if count > self.size:
                raise _Truncated
            if item_type == _STRING:
                return self._strings(count)
            return [self._value(item_type) for _ in range(count)]
        raise CorruptModelError(f"{self.path}: unknown GGUF value type {type_id} at byte {self._pos:,}")
