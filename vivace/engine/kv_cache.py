"""Paged KV block pool: fixed-size blocks with reference counts and an LRU of reusable cached blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

# A block's chained prefix hash: sha256 over its parent's hash and its tokens (kv_cache_manager.py).
BlockHash = bytes


class OutOfBlocksError(RuntimeError):
    """The pool has no free block; the scheduler answers by preempting."""


class BlockPool:
    """Hands out block ids; a block with a prefix hash and no users stays reusable until evicted.

    With `null_block`, id 0 is reserved as the placeholder of blocks a sliding window released
    (kv_groups.py): never handed out, never counted; the usable ids are then 1..num_blocks.
    """

    def __init__(self, num_blocks: int, null_block: bool = False) -> None:
        if num_blocks <= 0:
            raise ValueError(f"KV cache needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.num_ids = num_blocks + null_block  # rows of the KV tensors this pool indexes
        self.ref_counts = [0] * self.num_ids
        self.block_hash: list[BlockHash | None] = [None] * self.num_ids
        self._free_plain: list[int] = list(range(self.num_ids - 1, int(null_block) - 1, -1))  # stack, no hash
        self._free_cached: OrderedDict[int, None] = OrderedDict()  # ref 0 with hash, LRU first
        self._hash_to_block: dict[BlockHash, int] = {}
        self.computed = [False] * self.num_ids  # KV content is valid (or written in this step)
        self.block_parent: list[BlockHash] = [b""] * self.num_ids  # the published hash's parent in its chain
        # Called with (block, hash, parent) when a cached block is reused for other tokens, while its
        # KV is still intact: the session tier (kv_tier.py) keeps a copy. None = the KV is lost.
        self.on_evict: Callable[[int, BlockHash, BlockHash], None] | None = None

    # ---- counts -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks that can be handed out now (plain free plus evictable cached)."""
        return len(self._free_plain) + len(self._free_cached)

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - self.num_free

    # ---- allocation ---------------------------------------------------------------------
    def allocate(self) -> int:
        """A fresh block with ref count 1, evicting the least recently used cached block if needed."""
        if self._free_plain:
            block = self._free_plain.pop()
        elif self._free_cached:
            block, _ = self._free_cached.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(block, self.block_hash[block], self.block_parent[block])
            self._forget_hash(block)
        else:
            raise OutOfBlocksError("no free KV block")
        self.ref_counts[block] = 1
        self.computed[block] = False
        return block

    def acquire(self, block: int) -> None:
        """Add a user to an existing (possibly cached, unreferenced) block."""
        if self.ref_counts[block] == 0:
            self._free_cached.pop(block, None)
        self.ref_counts[block] += 1

    def release(self, block: int) -> None:
        """Drop a user; at zero the block becomes free (kept as cache if it has a computed hash)."""
        count = self.ref_counts[block] - 1
        if count < 0:
            raise RuntimeError(f"block {block} released more often than acquired")
        self.ref_counts[block] = count
        if count:
            return
        if self.block_hash[block] is not None and self.computed[block]:
            self._free_cached[block] = None
        else:
            self._forget_hash(block)
            self._free_plain.append(block)

    # ---- prefix hashes -----------------------------------------------------------------
    def lookup(self, block_hash: BlockHash) -> int | None:
        """The block holding the tokens with this chained hash, if any."""
        return self._hash_to_block.get(block_hash)

    def register(self, block: int, block_hash: BlockHash, parent: BlockHash = b"") -> bool:
        """Publish a block under its chained hash (`parent`: the hash before it); False if another block has it."""
        if block_hash in self._hash_to_block or self.block_hash[block] is not None:
            return False
        self._hash_to_block[block_hash] = block
        self.block_hash[block] = block_hash
        self.block_parent[block] = parent
        return True

    def _forget_hash(self, block: int) -> None:
        h = self.block_hash[block]
        if h is not None:
            if self._hash_to_block.get(h) == block:
                del self._hash_to_block[h]
            self.block_hash[block] = None

    def invalidate(self, block: int) -> None:
        """The block's KV is not valid: unpublish it so no one reuses it."""
        self.computed[block] = False
        self._forget_hash(block)

    def reset_prefix_cache(self) -> None:
        """Drop every cached-but-unused block's hash (used blocks keep theirs)."""
        while self._free_cached:
            block, _ = self._free_cached.popitem(last=False)
            self._forget_hash(block)
            self._free_plain.append(block)
