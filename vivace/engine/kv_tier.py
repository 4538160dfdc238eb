"""The session KV tier: prefix-cache blocks evicted from the device, kept by chained hash and restored.

Following SGLang's HiCache (a host pool under the device cache: evicted device blocks are written back
to it; a prefix match that runs past the device continues into it and loads the blocks back) and
LMCache's local disk backend (chunks keyed by prefix hashes, LRU, a lookup stops at the first miss).

Storage is one buffer of fixed-size slots after a 4 KiB header: a memory-mapped file (the CPU engine,
whose device memory already is RAM) or host memory (pinned, for a CUDA engine); the same code copies
in and out of both. A slot is a 128-byte header (magic, block hash, parent hash, payload crc32, a use
counter, header crc32) and one block's KV: every layer, K and V, an int8 cache's rows with their
scales. A slot is written header-cleared, payload, header last, so a write torn by a crash leaves a
header or payload that fails its checksum; restoring checks both (and that the stored parent is the
requester's), and a slot that fails is dropped, never served. The file header holds the KV layout and
a fingerprint of the model and numerics; a file written for anything else is wiped on open.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from vivace.engine.config import InvalidParameterError
from vivace.engine.kv_cache import BlockHash

FILE_HEADER_BYTES = 4096
SLOT_HEADER_BYTES = 128
_FILE_MAGIC = b"VVKVTIER"
_SLOT_MAGIC = b"VVKVBLK1"
_FILE_HEADER = struct.Struct("<8sI32sQQ")  # magic, version, fingerprint, num_slots, slot_bytes
_SLOT_HEADER = struct.Struct("<8s32s32sIQ")  # magic, block hash, parent digest, payload crc32, use counter
_VERSION = 1


@dataclass
class TierStats:
    """What the tier did, in blocks and bytes (cumulative, except `used_bytes`)."""

    hits: int = 0  # blocks restored instead of recomputed
    misses: int = 0  # lookups past the device-resident prefix that found no usable block
    stored_bytes: int = 0  # KV written into the tier
    evicted_bytes: int = 0  # KV dropped from the tier for room (least recently used first)
    rejected: int = 0  # slots that failed verification (torn, corrupted, another chain) and were dropped
    used_bytes: int = 0  # KV held now


def parent_digest(parent: BlockHash) -> bytes:
    """The 32 bytes a slot records for its parent: the parent's hash, or a digest of a chain's root."""
    return parent if len(parent) == 32 else hashlib.sha256(b"root:" + parent).digest()


class KVTier:
    """A bounded LRU store of KV blocks keyed by chained block hash, over a device KV cache tensor."""

    def __init__(
        self, kv_cache: torch.Tensor, block_size: int, capacity_bytes: int, fingerprint: bytes, path: str | None = None
    ) -> None:
        # One block of the cache [layers, 2, slots, heads, width] is kv_cache[:, :, b*bs:(b+1)*bs].
        self.kv_cache = kv_cache
        self.block_size = block_size
        layers, two, _, heads, width = kv_cache.shape
        self.block_shape = (layers, two, block_size, heads, width)
        self.payload_bytes = layers * two * block_size * heads * width * kv_cache.element_size()
        self.slot_bytes = -(-(SLOT_HEADER_BYTES + self.payload_bytes) // 4096) * 4096
        self.num_slots = (capacity_bytes - FILE_HEADER_BYTES) // self.slot_bytes
        if self.num_slots < 1:
            raise InvalidParameterError(
                "kv_tier_bytes",
                f"{capacity_bytes:,} bytes hold no KV block ({FILE_HEADER_BYTES + self.slot_bytes:,} bytes for one)",
            )
        layout = f"{tuple(kv_cache.shape[:2])}{self.block_shape}{kv_cache.dtype}".encode()
        self.fingerprint = hashlib.sha256(fingerprint + layout).digest()
        self.path = path
        self.stats = TierStats()
        self._index: OrderedDict[BlockHash, int] = OrderedDict()  # hash -> slot, least recently used first
        self._free: list[int] = []
        self._counter = 0
        size = FILE_HEADER_BYTES + self.num_slots * self.slot_bytes
        if path is None:
            self._fd = None
            self._map = None
            self._bytes = torch.zeros(size, dtype=torch.uint8, pin_memory=kv_cache.is_cuda).numpy()
            self._format()
        else:
            self._fd = self._open_file(path, size)
            self._map = mmap.mmap(self._fd, size)
            self._bytes = np.frombuffer(self._map, dtype=np.uint8)
            if not self._load_index():
                self._format()
        self._slots = torch.from_numpy(self._bytes[FILE_HEADER_BYTES:]).view(self.num_slots, self.slot_bytes)

    # ---- the store ----------------------------------------------------------------------
    @staticmethod
    def _open_file(path: str, size: int) -> int:
        """Open (or create) the store's file at `size` bytes, locked against a second engine using it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InvalidParameterError("kv_tier_path", f"cannot open {path!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InvalidParameterError("kv_tier_path", f"{path!r} is in use by another engine") from None
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, 0)  # another size: nothing in it is trusted (re-extended as zeros)
            os.ftruncate(fd, size)
        return fd

    def _format(self) -> None:
        """An empty store: every slot free, the file header written for this layout and model."""
        self._bytes[:FILE_HEADER_BYTES] = 0
        for slot in range(self.num_slots):
            start = FILE_HEADER_BYTES + slot * self.slot_bytes
            self._bytes[start : start + len(_SLOT_MAGIC)] = 0
        header = _FILE_HEADER.pack(_FILE_MAGIC, _VERSION, self.fingerprint, self.num_slots, self.slot_bytes)
        self._write(0, header + struct.pack("<I", zlib.crc32(header)))
        self._index.clear()
        self._free = list(range(self.num_slots - 1, -1, -1))
        self.stats.used_bytes = 0

    def _load_index(self) -> bool:
        """Index the slots of an existing file written for this layout and model; False if it was not."""
        raw = self._read(0, _FILE_HEADER.size + 4)
        header, (crc,) = raw[: _FILE_HEADER.size], struct.unpack("<I", raw[_FILE_HEADER.size :])
        if zlib.crc32(header) != crc:
            return False
        if _FILE_HEADER.unpack(header) != (_FILE_MAGIC, _VERSION, self.fingerprint, self.num_slots, self.slot_bytes):
            return False
        found: list[tuple[int, BlockHash, int]] = []
        for slot in range(self.num_slots):
            fields = self._slot_header(slot)
            if fields is None:
                self._free.append(slot)
            else:
                found.append((fields[4], fields[1], slot))
        for counter, block_hash, slot in sorted(found):  # least recently used first, as they were
            self._index[block_hash] = slot
            self._counter = max(self._counter, counter)
        self._free.reverse()
        self.stats.used_bytes = len(self._index) * self.payload_bytes
        return True

    def _read(self, offset: int, size: int) -> bytes:
        return self._bytes[offset : offset + size].tobytes()

    def _write(self, offset: int, data: bytes) -> None:
        self._bytes[offset : offset + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def _slot_offset(self, slot: int) -> int:
        return FILE_HEADER_BYTES + slot * self.slot_bytes

    def _slot_header(self, slot: int) -> tuple | None:
        """A slot's header fields, or None when it is empty or its header fails its checksum."""
        raw = self._read(self._slot_offset(slot), _SLOT_HEADER.size + 4)
        body, (crc,) = raw[: _SLOT_HEADER.size], struct.unpack("<I", raw[_SLOT_HEADER.size :])
        if body[: len(_SLOT_MAGIC)] != _SLOT_MAGIC or zlib.crc32(body) != crc:
            return None
        return _SLOT_HEADER.unpack(body)

    def _payload(self, slot: int) -> torch.Tensor:
        """A slot's KV as a block-shaped tensor (a view into the store)."""
        raw = self._slots[slot, SLOT_HEADER_BYTES : SLOT_HEADER_BYTES + self.payload_bytes]
        return raw.view(self.kv_cache.dtype).view(self.block_shape)

    def _payload_crc(self, slot: int) -> int:
        start = self._slot_offset(slot) + SLOT_HEADER_BYTES
        return zlib.crc32(self._bytes[start : start + self.payload_bytes])

    def _drop(self, block_hash: BlockHash) -> None:
        slot = self._index.pop(block_hash)
        self._write(self._slot_offset(slot), bytes(len(_SLOT_MAGIC)))
        self._free.append(slot)
        self.stats.used_bytes -= self.payload_bytes

    def _device_block(self, block: int) -> torch.Tensor:
        return self.kv_cache[:, :, block * self.block_size : (block + 1) * self.block_size]

    # ---- what the KV cache manager calls --------------------------------------------------
    def __contains__(self, block_hash: BlockHash) -> bool:
        return block_hash in self._index

    def __len__(self) -> int:
        return len(self._index)

    def save(self, block: int, block_hash: BlockHash, parent: BlockHash) -> None:
        """Copy device block `block` (about to be reused) into the tier under its hash, evicting the LRU slot."""
        if block_hash in self._index:
            self._index.move_to_end(block_hash)  # the same tokens' KV is already here
            return
        if not self._free:
            oldest = next(iter(self._index))
            self._drop(oldest)
            self.stats.evicted_bytes += self.payload_bytes
        slot = self._free.pop()
        offset = self._slot_offset(slot)
        self._write(offset, bytes(len(_SLOT_MAGIC)))  # invalid until the header below is complete
        self._payload(slot).copy_(self._device_block(block))
        self._counter += 1
        body = _SLOT_HEADER.pack(_SLOT_MAGIC, block_hash, parent_digest(parent), self._payload_crc(slot), self._counter)
        self._write(offset, body + struct.pack("<I", zlib.crc32(body)))
        self._index[block_hash] = slot
        self.stats.stored_bytes += self.payload_bytes
        self.stats.used_bytes += self.payload_bytes

    def lookup(self, block_hash: BlockHash) -> bool:
        """Whether the tier holds this block (its contents are verified when restored); counts a miss if not."""
        if block_hash in self._index:
            self._index.move_to_end(block_hash)  # kept ahead of the saves the restore will cause
            return True
        self.stats.misses += 1
        return False

    def restore(self, block_hash: BlockHash, parent: BlockHash, block: int) -> bool:
        """Copy the tier's KV for `block_hash` into device block `block`; False (slot dropped) if it fails verification.

        Verified: the slot's header checksum, its hash and parent (the requester's chain), the payload checksum.
        """
        slot = self._index.get(block_hash)
        if slot is None:
            self.stats.misses += 1
            return False
        fields = self._slot_header(slot)
        if (
            fields is None
            or fields[1] != block_hash
            or fields[2] != parent_digest(parent)
            or fields[3] != self._payload_crc(slot)
        ):
            self._drop(block_hash)
            self.stats.rejected += 1
            return False
        self._device_block(block).copy_(self._payload(slot))
        self._index.move_to_end(block_hash)
        self.stats.hits += 1
        return True

    def clear(self) -> None:
        """Forget every stored block."""
        self._format()

    def close(self) -> None:
        """Flush and release the file (host memory is simply dropped)."""
        if self._map is not None:
            self._slots = None
            self._bytes = None
            self._map.flush()
            self._map.close()
            os.close(self._fd)
            self._map = None
