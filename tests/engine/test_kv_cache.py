"""Block pool: reference counts, free accounting and LRU reuse of cached blocks."""

from __future__ import annotations

import pytest

from vivace.engine.kv_cache import BlockPool, OutOfBlocksError


def test_allocate_release_counts() -> None:
    pool = BlockPool(4)
    blocks = [pool.allocate() for _ in range(4)]
    assert sorted(blocks) == [0, 1, 2, 3]
    assert pool.num_free == 0 and pool.num_used == 4
    with pytest.raises(OutOfBlocksError):
        pool.allocate()
    for b in blocks:
        pool.release(b)
    assert pool.num_free == 4 and pool.num_used == 0


def test_shared_block_freed_after_last_user() -> None:
    pool = BlockPool(2)
    b = pool.allocate()
    pool.acquire(b)
    pool.release(b)
    assert pool.num_used == 1
    pool.release(b)
    assert pool.num_used == 0
    with pytest.raises(RuntimeError):
        pool.release(b)


def test_cached_blocks_are_reused_then_evicted_lru() -> None:
    pool = BlockPool(3)
    a, b = pool.allocate(), pool.allocate()
    for block, h in ((a, 111), (b, 222)):
        pool.computed[block] = True
        assert pool.register(block, h)
    assert not pool.register(pool.allocate(), 111)  # hash already taken by a
    pool.release(a)
    pool.release(b)
    # Both stay findable while unused, and count as free.
    assert pool.lookup(111) == a and pool.lookup(222) == b
    assert pool.num_free == 2
    pool.acquire(b)  # revive b: no longer evictable
    assert pool.num_free == 1
    fresh = pool.allocate()  # must evict a (the only cached unused block)
    assert fresh == a
    assert pool.lookup(111) is None and pool.lookup(222) == b


def test_uncomputed_block_is_not_kept_as_cache() -> None:
    pool = BlockPool(1)
    a = pool.allocate()
    pool.register(a, 5)
    pool.release(a)  # never computed: its hash must go
    assert pool.lookup(5) is None
    assert pool.num_free == 1
