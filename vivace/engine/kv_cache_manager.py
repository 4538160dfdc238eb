"""KV cache manager: every sequence's KV blocks, between the scheduler and the block pool.

Prefix matching (chained hashes of full blocks), allocation, freeing and publishing live here and
nowhere else; the scheduler asks in tokens and sequences, never touches the pool itself.

A model whose layers all attend over the whole context has one KV group: one block table per
sequence, shared by every layer. A hybrid model (Gemma 3's sliding-window and global layers) has
several (kv_groups.py): a table per group per sequence, all drawing from the one pool, and a window
group's blocks released (replaced by the null block) once no later query can see them. Block
counts the scheduler asks about are totals over the groups, so its accounting holds for both.

Two optional companions sit behind it: the session tier (kv_tier.py), which keeps the KV of evicted
cached blocks and restores it when a prefix match runs past the device-resident blocks (one KV group
only), and session pins (kv_sessions.py), which hold a finished conversation's blocks against
eviction for a while.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

from vivace.engine.kv_cache import BlockHash, BlockPool
from vivace.engine.kv_groups import NULL_BLOCK, KVLayout, cached_runs, single_group, skipped_blocks, window_allows
from vivace.engine.kv_sessions import SessionPins
from vivace.engine.kv_tier import KVTier
from vivace.engine.sequence import Sequence


@dataclass
class PrefixMatch:
    """Cached blocks holding a prefix of a sequence, and whether its next block is still being computed.

    `blocks` are KV group 0's; `group_blocks` the other groups' (window groups' start with null blocks).
    `restore`: hashes of the blocks after `blocks` that the session tier holds, to be restored in order.
    """

    blocks: list[int] = field(default_factory=list)
    pending: bool = False
    group_blocks: list[list[int]] = field(default_factory=list)
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


def group_key(block_hash: BlockHash, group: int) -> BlockHash:
    """A block's key in the pool's prefix index: group 0's is its hash, other groups' are set apart from it."""
    return block_hash if group == 0 else block_hash + b"/g%d" % group


class KVCacheManager:
    """Allocates, shares (by prefix) and frees the KV blocks of sequences, in every KV group."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        sessions: SessionPins | None = None,
        layout: KVLayout | None = None,
    ) -> None:
        self.layout = layout or single_group(1)
        self.num_groups = len(self.layout.groups)
        self.windows = [(g, group.window) for g, group in enumerate(self.layout.groups) if group.window is not None]
        self.pool = BlockPool(num_blocks, null_block=bool(self.windows))
        self.null = NULL_BLOCK if self.windows else -1  # no block id is -1: nothing is skipped
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.tier: KVTier | None = None
        self.sessions = sessions if enable_prefix_caching else None
        if self.sessions is not None:
            self.sessions.attach(self.pool)

    def attach_tier(self, tier: KVTier | None) -> None:
        """Keep evicted cached blocks in `tier` and restore them from it (prefix caching only); None detaches.

        One KV group only: a tier slot holds a block's KV in every layer."""
        if tier is not None and self.num_groups > 1:
            raise ValueError("the session KV tier needs one KV group (every layer over the whole context)")
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
        """Blocks that hold `num_tokens` tokens (in one group's table)."""
        return -(-num_tokens // self.block_size)

    def max_blocks(self, num_tokens: int, chunk: int) -> int:
        """Blocks of all groups a sequence of `num_tokens` tokens, computed in chunks of `chunk`, holds at most."""
        return self.layout.blocks_needed(num_tokens, chunk, self.block_size)

    def tables(self, seq: Sequence) -> list[list[int]]:
        """Every group's block table of `seq`."""
        return [seq.block_table, *seq.group_tables]

    # ---- prefix reuse -------------------------------------------------------------------
    def match_prefix(self, seq: Sequence) -> PrefixMatch:
        """The computed cached blocks that hold a prefix of `seq` (none when prefix caching is off).

        Full-attention groups need every block of the prefix; window groups only those the first
        recomputed token's window sees. At least one prompt token is always left to compute, so the
        last step has logits to sample from.
        """
        if not self.enable_prefix_caching or seq.pool:  # pooling needs every prompt token's hidden state
            return PrefixMatch()
        max_blocks = (seq.num_tokens - 1) // self.block_size
        if seq.score_from is not None:
            # Tokens to be scored need the logits of the position before them computed here.
            max_blocks = min(max_blocks, max(seq.score_from - 1, 0) // self.block_size)
        hashes = extend_block_hashes(seq, self.block_size)[:max_blocks]
        pool = self.pool
        match = PrefixMatch()
        found: list[list[int]] = [[] for _ in range(self.num_groups)]
        limit = len(hashes)
        for g, group in enumerate(self.layout.groups):
            if group.window is not None:
                continue
            for i, block_hash in enumerate(hashes[:limit]):
                block = pool.lookup(group_key(block_hash, g))
                if block is None:
                    limit = i
                    break
                if not pool.computed[block]:
                    match.pending = True
                    limit = i
                    break
                found[g].append(block)
        if self.windows and limit:
            limit = self._match_windows(hashes[:limit], found)
        tables = [table[:limit] for table in found]
        match.blocks, match.group_blocks = tables[0], tables[1:]
        if self.tier is not None and not match.pending:  # one KV group (attach_tier refuses more)
            for block_hash in hashes[len(match.blocks) :]:
                if not self.tier.lookup(block_hash):
                    break
                match.restore.append(block_hash)
        return match

    def _match_windows(self, hashes: list[BlockHash], found: list[list[int]]) -> int:
        """The longest hit within `hashes` every window group allows; fills their tables (nulls first)."""
        pool, bs = self.pool, self.block_size
        cached: dict[int, list[int | None]] = {}
        for g, _window in self.windows:
            blocks: list[int | None] = []
            for block_hash in hashes:
                block = pool.lookup(group_key(block_hash, g))
                blocks.append(block if block is not None and pool.computed[block] else None)
            cached[g] = blocks
        runs = {g: cached_runs([b is not None for b in blocks]) for g, blocks in cached.items()}
        limit = len(hashes)
        while limit and not all(window_allows(runs[g], limit, window, bs) for g, window in self.windows):
            limit -= 1
        for g, window in self.windows:
            skip = skipped_blocks(limit * bs, window, bs)
            found[g] = [NULL_BLOCK] * skip + cached[g][skip:limit]  # type: ignore[list-item]
        return limit

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
        pool, null = self.pool, self.null
        parent_of_first = chain_root(seq)
        for g, table in enumerate(self.tables(seq)):
            for i in range(seq.num_published_blocks, full):
                block = table[i]
                if block != null and not pool.computed[block]:
                    pool.computed[block] = True
                    pool.register(block, group_key(hashes[i], g), hashes[i - 1] if i else parent_of_first)
        seq.num_published_blocks = full

    # ---- allocation ---------------------------------------------------------------------
    def can_admit(self, match: PrefixMatch, num_tokens: int) -> bool:
        """Whether a waiting sequence reusing `match` can get blocks for its first `num_tokens` tokens now."""
        needed = max(0, self.blocks_for(num_tokens) - len(match.blocks)) * self.num_groups
        ref_counts, null = self.pool.ref_counts, self.null
        revived = sum(
            1
            for table in [match.blocks, *match.group_blocks]
            for block in table
            if block != null and not ref_counts[block]
        )
        return needed + revived <= self.pool.num_free

    def admit(self, seq: Sequence, match: PrefixMatch, num_tokens: int) -> int:
        """Give `seq` the matched blocks, restored ones, then fresh ones up to `num_tokens` tokens (after `can_admit`).

        Returns how many leading blocks hold valid KV: `match.num_blocks`, or fewer when a tier block
        failed verification (it and those after it are then computed like fresh ones).
        """
        matched = [match.blocks, *match.group_blocks]
        matched += [[] for _ in range(self.num_groups - len(matched))]  # an empty match names no group
        tables = []
        for blocks in matched:
            for block in blocks:
                if block != self.null:
                    self.pool.acquire(block)
            tables.append(list(blocks))
        seq.block_table, seq.group_tables = tables[0], tables[1:]
        valid = len(match.blocks)
        if match.restore:  # one KV group: the tier's blocks follow group 0's device-resident ones
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
        total = self.blocks_for(num_tokens)
        for table in tables:
            for _ in range(max(0, total - len(table))):
                table.append(self.pool.allocate())
        return valid

    def blocks_to_grow(self, seq: Sequence, num_tokens: int) -> int:
        """Fresh blocks (all groups together) `seq` needs to hold `num_tokens` tokens."""
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table)) * self.num_groups

    def grow(self, seq: Sequence, num_blocks: int) -> None:
        """Add `num_blocks` fresh blocks to `seq`'s tables, an equal share each (from `blocks_to_grow`;
        the caller made room)."""
        if not num_blocks:
            return  # most decode steps: the last block still has room
        per_table = num_blocks // self.num_groups
        for table in self.tables(seq):
            for _ in range(per_table):
                table.append(self.pool.allocate())

    def release_out_of_window(self, seq: Sequence) -> None:
        """Release the window groups' blocks no query from `seq.num_computed_tokens` on can see."""
        for g, window in self.windows:
            table = seq.table(g)
            end = min(skipped_blocks(seq.num_computed_tokens, window, self.block_size), len(table))
            first = end
            while first > 0 and table[first - 1] != NULL_BLOCK:  # the ones before were released earlier
                first -= 1
            for i in range(first, end):  # oldest first: the prefix cache evicts them first
                self.pool.release(table[i])
                table[i] = NULL_BLOCK

    def truncate(self, seq: Sequence, num_tokens: int) -> None:
        """Keep only the blocks holding `seq`'s first `num_tokens` tokens (rejected proposed tokens' tail)."""
        keep = max(self.blocks_for(num_tokens), seq.num_published_blocks)
        for table in self.tables(seq):
            while len(table) > keep:
                block = table.pop()
                if block != self.null:
                    self.pool.release(block)

    def pin_session(self, seq: Sequence) -> None:
        """Hold a finished sequence's published blocks for its session (when it has one and sessions are on)."""
        if self.sessions is not None and seq.session_id is not None and seq.num_published_blocks:
            published = seq.num_published_blocks
            blocks = [block for table in self.tables(seq) for block in table[:published] if block != self.null]
            self.sessions.pin(seq.session_id, blocks)

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
        for table in self.tables(seq):
            for block in reversed(table):
                if block != self.null:
                    self.pool.release(block)
        seq.block_table = []
        seq.group_tables = []
        seq.num_published_blocks = 0

    def invalidate(self, seq: Sequence) -> None:
        """After a failed step: the blocks of `seq` hold no valid KV, so unpublish them."""
        for table in self.tables(seq):
            for block in table:
                if block != self.null:
                    self.pool.invalidate(block)

    def reset_prefix_cache(self) -> None:
        """Forget every cached block no sequence uses, and everything the session tier holds."""
        self.pool.reset_prefix_cache()
        if self.tier is not None:
            self.tier.clear()
