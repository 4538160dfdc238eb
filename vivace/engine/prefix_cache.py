"""Shared-prefix reuse: chained hashes of full KV blocks, matched against the block pool."""

from __future__ import annotations

from vivace.engine.kv_cache import BlockPool
from vivace.engine.sequence import Sequence


def extend_block_hashes(seq: Sequence, block_size: int) -> list[int]:
    """Bring `seq.block_hashes` up to date with its full blocks; each hash covers the whole prefix."""
    hashes = seq.block_hashes
    tokens = seq.token_ids
    parent = hashes[-1] if hashes else 0
    for i in range(len(hashes), len(tokens) // block_size):
        parent = hash((parent, tuple(tokens[i * block_size : (i + 1) * block_size])))
        hashes.append(parent)
    return hashes


def match_prefix(pool: BlockPool, seq: Sequence, block_size: int) -> tuple[list[int], bool]:
    """Cached blocks that hold a prefix of `seq`, and whether the next block is still being computed.

    At least one prompt token is always left to compute, so the last step has logits to sample from.
    """
    max_blocks = (seq.num_tokens - 1) // block_size
    if seq.score_from is not None:
        # Tokens to be scored need the logits of the position before them computed here.
        max_blocks = min(max_blocks, max(seq.score_from - 1, 0) // block_size)
    hashes = extend_block_hashes(seq, block_size)
    blocks: list[int] = []
    for block_hash in hashes[:max_blocks]:
        block = pool.lookup(block_hash)
        if block is None:
            return blocks, False
        if not pool.computed[block]:
            return blocks, True
        blocks.append(block)
    return blocks, False


def publish_full_blocks(pool: BlockPool, seq: Sequence, block_size: int, num_tokens: int) -> None:
    """Mark the blocks filled by the first `num_tokens` tokens as computed and publish their hashes."""
    full = min(num_tokens // block_size, len(seq.block_table))
    if full <= seq.num_published_blocks:
        return  # a decode step that filled no block: nothing new (this runs for every sequence, every step)
    hashes = extend_block_hashes(seq, block_size)
    for i in range(seq.num_published_blocks, full):
        block = seq.block_table[i]
        if not pool.computed[block]:
            pool.computed[block] = True
            pool.register(block, hashes[i])
    seq.num_published_blocks = full
