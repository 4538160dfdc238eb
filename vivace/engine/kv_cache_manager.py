"""KV cache manager: every sequence's KV blocks, between the scheduler and the block pool.

Prefix matching (chained hashes of full blocks), allocation, freeing and publishing live here and
nowhere else; the scheduler asks in tokens and sequences, never touches the pool itself.

Today every layer attends over the whole context, so a sequence has one block table that all layers
share (one KV group). Layers with another lifetime (sliding-window attention) form a group of their
own: a pool and a block table per sequence per group, the window's blocks freed as they fall out of
it; the methods below are the group-independent contract the scheduler relies on.

Two optional companions sit behind it: the session tier (kv_tier.py), which keeps the KV of evicted
cached blocks and restores it when a prefix match runs past the device-resident blocks, and session
pins (kv_sessions.py), which hold a finished conversation's blocks against eviction for a while.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

from vivace.engine.kv_cache import BlockHash, BlockPool
from vivace.engine.kv_sessions import SessionPins
from vivace.engine.kv_tier import KVTier
from vivace.engine.sequence import Sequence


@dataclass
class PrefixMatch:
    """Cached blocks holding a prefix of a sequence, and whether its next block is still being computed.

    `restore`: hashes of the blocks after `blocks` that the session tier holds, to be restored in order.
    """

    blocks: list[int] = field(default_factory=list)
    pending: bool = False
    restore: list[BlockHash] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        """Blocks of the prefix whose KV is not computed: device-resident plus restored."""
        return len(self.blocks) + len(self.restore)


def block_hash(parent: BlockHash, tokens: list[int]) -> BlockHash:
    """The chained hash of one full block: sha256 of the parent block's hash and the tokens' bytes.

    A cryptographic hash because a collision hands one request another's KV blocks: Python's
    `hash()` of int tuples is not randomized, so colliding prompts could be searched for offline.
    Token ids are below 2**31 (checked at admission), so four bytes each encode them exactly.
    """
    return hashlib.sha256(parent + array("i", tokens).tobytes()).digest()


def chain_root(seq: Sequence) -> BlockHash:
    """What a sequence's first block hash chains from: its LoRA adapter (or nothing for the base model)."""
    return b"lora:%d" % seq.lora_id if seq.lora_id else b""


def extend_block_hashes(seq: Sequence, block_size: int) -> list[BlockHash]:
    """Bring `seq.block_hashes` up to date with its full blocks; each hash covers the whole prefix.

    The chain starts from the sequence's LoRA adapter: the same tokens under another adapter (or
    none) have other KV, so their blocks are never shared.
    """
    hashes = seq.block_hashes
    tokens = seq.token_ids
    parent = hashes[-1] if hashes else chain_root(seq)
    for i in range(len(hashes), len(tokens) // block_size):
        parent = block_hash(parent, tokens[i * block_size : (i + 1) * block_size])
        hashes.append(parent)
    return hashes


class KVCacheManager:
    """Allocates, shares (by prefix) and frees the KV blocks of sequences."""

    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True, sessions: SessionPins | None = None
    ) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.tier: KVTier | None = None
        self.sessions = sessions if enable_prefix_caching else None
        if self.sessions is not None:
            self.sessions.attach(self.pool)

    def attach_tier(self, tier: KVTier | None) -> None:
        """Keep evicted cached blocks in `tier` and restore them from it (prefix caching only); None detaches."""
        if self.enable_prefix_caching:
            self.tier = tier
            self.pool.on_evict = None if tier is None else tier.save

    # ---- counts -------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free(self) -> int:
        """Blocks that can be handed out now (free, or cached and unreferenced)."""
        return self.pool.num_free

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.pool.num_used

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks that hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    # ---- prefix reuse -------------------------------------------------------------------
    def match_prefix(self, seq: Sequence) -> PrefixMatch:
        """The computed cached blocks that hold a prefix of `seq` (none when prefix caching is off).

        At least one prompt token is always left to compute, so the last step has logits to sample from.
        """
        if not self.enable_prefix_caching or seq.pool:  # pooling needs every prompt token's hidden state
            return PrefixMatch()
        max_blocks = (seq.num_tokens - 1) // self.block_size
        if seq.score_from is not None:
            # Tokens to be scored need the logits of the position before them computed here.
            max_blocks = min(max_blocks, max(seq.score_from - 1, 0) // self.block_size)
        match = PrefixMatch()
        hashes = extend_block_hashes(seq, self.block_size)[:max_blocks]
        for block_hash in hashes:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            if not self.pool.computed[block]:
                match.pending = True
                break
            match.blocks.append(block)
        if self.tier is not None and not match.pending:
            for block_hash in hashes[len(match.blocks) :]:
                if not self.tier.lookup(block_hash):
                    break
                match.restore.append(block_hash)
        return match

    def publish(self, seq: Sequence, num_tokens: int) -> None:
        """Mark the blocks filled by the first `num_tokens` tokens as computed and publish their hashes.

        Called when a step is scheduled: its writes precede every read of a later step.
        """
        if not self.enable_prefix_caching:
            return
        full = min(num_tokens // self.block_size, len(seq.block_table))
        if full <= seq.num_published_blocks:
            return  # a decode step that filled no block: nothing new (this runs for every sequence, every step)
        hashes = extend_block_hashes(seq, self.block_size)
        pool = self.pool
        for i in range(seq.num_published_blocks, full):
            block = seq.block_table[i]
            if not pool.computed[block]:
                pool.computed[block] = True
                pool.register(block, hashes[i], hashes[i - 1] if i else chain_root(seq))
        seq.num_published_blocks = full

    # ---- allocation ---------------------------------------------------------------------
    def can_admit(self, match: PrefixMatch, num_tokens: int) -> bool:
        """Whether a waiting sequence reusing `match` can get blocks for its first `num_tokens` tokens now."""
        needed = max(0, self.blocks_for(num_tokens) - len(match.blocks))
        revived = sum(1 for block in match.blocks if self.pool.ref_counts[block] == 0)
        return needed + revived <= self.pool.num_free

    def admit(self, seq: Sequence, match: PrefixMatch, num_tokens: int) -> int:
        """Give `seq` the matched blocks, restored ones, then fresh ones up to `num_tokens` tokens (after `can_admit`).

        Returns how many leading blocks hold valid KV: `match.num_blocks`, or fewer when a tier block
        failed verification (it and those after it are then computed like fresh ones).
        """
        for block in match.blocks:
            self.pool.acquire(block)
        seq.block_table = list(match.blocks)
        valid = len(match.blocks)
        if match.restore:
            parent = seq.block_hashes[valid - 1] if valid else chain_root(seq)
            for block_hash in match.restore:
                block = self.pool.allocate()
                seq.block_table.append(block)
                if not self.tier.restore(block_hash, parent, block):
                    break  # the chain is broken here: the rest is computed
                self.pool.computed[block] = True
                self.pool.register(block, block_hash, parent)
                valid += 1
                parent = block_hash
        for _ in range(max(0, self.blocks_for(num_tokens) - len(seq.block_table))):
            seq.block_table.append(self.pool.allocate())
        return valid

    def blocks_to_grow(self, seq: Sequence, num_tokens: int) -> int:
        """Fresh blocks `seq` needs to hold `num_tokens` tokens."""
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table))

    def grow(self, seq: Sequence, num_blocks: int) -> None:
        """Append `num_blocks` fresh blocks to `seq`'s table (from `blocks_to_grow`; the caller made room)."""
        for _ in range(num_blocks):
            seq.block_table.append(self.pool.allocate())

    def truncate(self, seq: Sequence, num_tokens: int) -> None:
        """Keep only the blocks holding `seq`'s first `num_tokens` tokens (rejected proposed tokens' tail)."""
        keep = max(self.blocks_for(num_tokens), seq.num_published_blocks)
        while len(seq.block_table) > keep:
            self.pool.release(seq.block_table.pop())

    def pin_session(self, seq: Sequence) -> None:
        """Hold a finished sequence's published blocks for its session (when it has one and sessions are on)."""
        if self.sessions is not None and seq.session_id is not None and seq.num_published_blocks:
            self.sessions.pin(seq.session_id, seq.block_table[: seq.num_published_blocks])

    def release_session_pin(self) -> bool:
        """Release the oldest session's pin (pins yield under pressure); False when none is held."""
        return self.sessions is not None and self.sessions.release_oldest()

    def expire_sessions(self) -> None:
        """Release the pins whose TTL has passed."""
        if self.sessions is not None:
            self.sessions.expire()

    def free(self, seq: Sequence) -> None:
        """Release every block of `seq`; computed, published ones stay reusable until evicted."""
        # Tail first, so the least useful blocks are the first evicted from the prefix cache.
        for block in reversed(seq.block_table):
            self.pool.release(block)
        seq.block_table = []
        seq.num_published_blocks = 0

    def invalidate(self, seq: Sequence) -> None:
        """After a failed step: the blocks of `seq` hold no valid KV, so unpublish them."""
        for block in seq.block_table:
            self.pool.invalidate(block)

    def reset_prefix_cache(self) -> None:
        """Forget every cached block no sequence uses, and everything the session tier holds."""
        self.pool.reset_prefix_cache()
        if self.tier is not None:
            self.tier.clear()
