"""The session KV tier's store: exact round trips, the LRU bound, torn and corrupted slots never served."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from vivace.engine.config import InvalidParameterError
from vivace.engine.kv_tier import FILE_HEADER_BYTES, SLOT_HEADER_BYTES, KVTier

BLOCK = 4
LAYERS, HEADS, WIDTH = 3, 2, 8
FINGERPRINT = b"model-a"


def make_cache(num_blocks: int = 6, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> torch.Tensor:
    """A KV cache laid out as the runner's [layers, 2, slots, heads, width], filled with random values."""
    g = torch.Generator().manual_seed(seed)
    shape = (LAYERS, 2, num_blocks * BLOCK, HEADS, WIDTH)
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
    return torch.randn(shape, generator=g).to(dtype)


def h(i: int) -> bytes:
    return hashlib.sha256(b"block %d" % i).digest()


def block(cache: torch.Tensor, b: int) -> torch.Tensor:
    return cache[:, :, b * BLOCK : (b + 1) * BLOCK]


def tier_for(cache: torch.Tensor, slots: int, path: str | None, fingerprint: bytes = FINGERPRINT) -> KVTier:
    probe = KVTier(cache, BLOCK, 1 << 16, fingerprint)  # host memory: only its slot size is read
    return KVTier(cache, BLOCK, FILE_HEADER_BYTES + slots * probe.slot_bytes, fingerprint, path)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int8])
@pytest.mark.parametrize("on_disk", [True, False])
def test_restore_is_exact(tmp_path, dtype, on_disk):
    """Saved then restored into another block: every layer's K and V (int8 rows with their scales) bit for bit."""
    cache = make_cache(dtype=dtype)
    tier = tier_for(cache, 4, str(tmp_path / "tier") if on_disk else None)
    original = block(cache, 1).clone()
    tier.save(1, h(1), h(0))
    block(cache, 1).zero_()  # the device block is reused for other tokens
    assert tier.lookup(h(1))
    assert tier.restore(h(1), h(0), 5)
    assert torch.equal(block(cache, 5), original)
    assert tier.stats.hits == 1 and tier.stats.stored_bytes == tier.payload_bytes


def test_lru_bound(tmp_path):
    """Never more than capacity: the least recently used block goes first, and a looked-up block is kept."""
    cache = make_cache()
    tier = tier_for(cache, 3, str(tmp_path / "tier"))
    for i in range(3):
        tier.save(i, h(i), b"")
    assert tier.lookup(h(0))  # now the most recently used
    tier.save(3, h(3), b"")
    tier.save(4, h(4), b"")
    assert len(tier) == 3
    assert h(0) in tier and h(1) not in tier and h(2) not in tier
    assert tier.stats.evicted_bytes == 2 * tier.payload_bytes
    assert tier.stats.used_bytes == 3 * tier.payload_bytes
    assert os.path.getsize(tmp_path / "tier") == FILE_HEADER_BYTES + 3 * tier.slot_bytes


def _slot_offset(tier: KVTier, block_hash: bytes) -> int:
    return FILE_HEADER_BYTES + tier._index[block_hash] * tier.slot_bytes


def test_corrupted_payload_is_never_served(tmp_path):
    """A flipped byte in the file (written behind the engine's back) fails the checksum: dropped, not restored."""
    path = tmp_path / "tier"
    cache = make_cache()
    tier = tier_for(cache, 4, str(path))
    tier.save(2, h(2), h(1))
    offset = _slot_offset(tier, h(2)) + SLOT_HEADER_BYTES + 100
    with open(path, "r+b") as f:  # another writer: the mapping is shared, so the engine sees it
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = block(cache, 4).clone()
    assert not tier.restore(h(2), h(1), 4)
    assert torch.equal(block(cache, 4), before)  # nothing was copied
    assert h(2) not in tier and tier.stats.rejected == 1


def test_wrong_parent_is_rejected(tmp_path):
    """The stored chain must be the requester's: the same hash under another parent is not restored."""
    cache = make_cache()
    tier = tier_for(cache, 4, str(tmp_path / "tier"))
    tier.save(2, h(2), h(1))
    assert not tier.restore(h(2), h(7), 4)
    assert tier.stats.rejected == 1


def test_reopened_file_serves_what_was_complete(tmp_path):
    """After a crash (the process gone, the file left): complete slots restore, a torn one is ignored."""
    path = str(tmp_path / "tier")
    cache = make_cache()
    tier = tier_for(cache, 4, path)
    for i in range(3):
        tier.save(i, h(i), b"")
    torn = _slot_offset(tier, h(1))
    expected = block(cache, 2).clone()
    tier.close()
    with open(path, "r+b") as f:  # a write torn mid-header: its checksum no longer matches
        f.seek(torn + 40)
        f.write(b"\0" * 8)
    other = make_cache(seed=1)
    reopened = tier_for(other, 4, path)
    assert len(reopened) == 2 and h(1) not in reopened
    assert reopened.restore(h(2), b"", 0)
    assert torch.equal(block(other, 0), expected)
    assert not reopened.restore(h(1), b"", 1)


def test_file_for_another_model_is_wiped(tmp_path):
    """A store written under another model fingerprint (or layout) is not trusted: it opens empty."""
    path = str(tmp_path / "tier")
    cache = make_cache()
    tier = tier_for(cache, 4, path)
    tier.save(0, h(0), b"")
    tier.close()
    assert len(tier_for(cache, 4, path, fingerprint=b"model-b")) == 0


def test_second_engine_on_one_file_is_refused(tmp_path):
    """Two engines writing one store would tear each other's slots: the second is refused, naming the field."""
    path = str(tmp_path / "tier")
    cache = make_cache()
    tier = tier_for(cache, 4, path)
    with pytest.raises(InvalidParameterError, match="kv_tier_path"):
        tier_for(cache, 4, path)
    tier.close()


def test_too_small_names_the_field():
    with pytest.raises(InvalidParameterError, match="kv_tier_bytes"):
        KVTier(make_cache(), BLOCK, 1000, FINGERPRINT)
