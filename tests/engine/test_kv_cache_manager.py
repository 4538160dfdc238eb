"""Prefix block hashes (sha256 chained over the parent hash and each block's token bytes), and KV groups:
window groups releasing blocks, vLLM's sliding-window prefix-hit rule, accounting over every group."""

import hashlib
import struct

from vivace.engine.config import SamplingParams
from vivace.engine.kv_cache_manager import KVCacheManager, PrefixMatch, block_hash, extend_block_hashes
from vivace.engine.kv_groups import NULL_BLOCK, kv_layout
from vivace.engine.sequence import Sequence


def _seq(tokens: list[int]) -> Sequence:
    return Sequence(
        seq_id=0,
        request_id="r",
        index=0,
        token_ids=list(tokens),
        num_prompt_tokens=len(tokens),
        params=SamplingParams(),
        arrival_order=0,
    )


def _reference(parent: bytes, tokens: list[int]) -> bytes:
    return hashlib.sha256(parent + struct.pack(f"<{len(tokens)}i", *tokens)).digest()


def test_block_hash_is_sha256_of_parent_and_little_endian_int32_tokens():
    tokens = [1, 2, 50_000, 2**31 - 1]
    assert block_hash(b"", tokens) == _reference(b"", tokens)
    parent = _reference(b"", [9, 9, 9, 9])
    assert block_hash(parent, tokens) == _reference(parent, tokens)


def test_hashes_chain_over_the_whole_prefix_and_cover_only_full_blocks():
    a = extend_block_hashes(_seq([1, 2, 3, 4, 5, 6, 7, 8, 9]), block_size=4)
    b = extend_block_hashes(_seq([0, 2, 3, 4, 5, 6, 7, 8]), block_size=4)
    assert len(a) == 2 and len(b) == 2  # the ninth token is no full block
    assert a[0] == _reference(b"", [1, 2, 3, 4]) and a[1] == _reference(a[0], [5, 6, 7, 8])
    # Same tokens in block two, different first block: the chained hash differs.
    assert a[1] != b[1]


def test_extending_a_sequence_keeps_its_earlier_hashes():
    seq = _seq([1, 2, 3, 4])
    first = list(extend_block_hashes(seq, 4))
    seq.token_ids.extend([5, 6, 7, 8])
    assert extend_block_hashes(seq, 4)[:1] == first and len(seq.block_hashes) == 2


def test_lora_adapters_start_their_own_hash_chains():
    """The same tokens under two adapters (or none) hash apart in every block, so no KV is shared between them."""
    tokens = list(range(40))
    base, first, second = _seq(tokens), _seq(tokens), _seq(tokens)
    first.lora_id, second.lora_id = 1, 2
    chains = [extend_block_hashes(s, 16) for s in (base, first, second)]
    assert chains[0][0] == _reference(b"", tokens[:16])
    assert chains[1][0] == _reference(b"lora:1", tokens[:16])
    for i in range(2):
        assert len({chain[i] for chain in chains}) == 3


# ---- KV groups: a full-attention group and two window groups over one pool ----------------------
WINDOW, BS = 6, 4  # a query at p sees keys p - 5 .. p: ceil(5 / 4) = 2 blocks before a hit point


def _hybrid(num_blocks: int = 64) -> KVCacheManager:
    return KVCacheManager(num_blocks, BS, layout=kv_layout([None, WINDOW, WINDOW]))


def _run_to(kv: KVCacheManager, seq: Sequence, num_tokens: int) -> None:
    """Admit `seq` (with its prefix hit), compute its first `num_tokens` tokens and publish them, as the scheduler does."""
    kv.admit(seq, kv.match_prefix(seq), num_tokens)
    kv.publish(seq, num_tokens)
    seq.num_computed_tokens = num_tokens


def _check_ref_counts(kv: KVCacheManager, seqs: list[Sequence]) -> None:
    """Every block's reference count is the number of tables holding it: nothing leaked, nothing shared wrongly."""
    held: dict[int, int] = {}
    for seq in seqs:
        for table in kv.tables(seq):
            for block in table:
                if block != NULL_BLOCK:
                    held[block] = held.get(block, 0) + 1
    assert {b: c for b, c in enumerate(kv.pool.ref_counts) if c} == held
    assert kv.num_used == len(held)


def test_window_groups_release_blocks_out_of_the_window_and_keep_table_positions():
    kv = _hybrid()
    seq = _seq(list(range(40)))
    _run_to(kv, seq, 40)
    assert kv.num_used == 3 * 10
    kv.release_out_of_window(seq)
    # Position 40's window starts at key 35 (block 8): blocks 0..7 of both window groups are released.
    for table in seq.group_tables:
        assert table[:8] == [NULL_BLOCK] * 8 and NULL_BLOCK not in table[8:] and len(table) == 10
    assert NULL_BLOCK not in seq.block_table and len(seq.block_table) == 10
    assert kv.num_used == 10 + 2 * 2
    _check_ref_counts(kv, [seq])
    kv.release_out_of_window(seq)  # idempotent
    assert kv.num_used == 14
    kv.free(seq)
    assert kv.num_used == 0


def test_prefix_hit_needs_every_global_block_and_the_window_before_the_hit_point():
    kv = _hybrid()
    first = _seq(list(range(40)))
    _run_to(kv, first, 40)
    kv.release_out_of_window(first)
    kv.reset_prefix_cache()  # the released window blocks are forgotten; the ones in use stay cached
    same = _seq(list(range(40)) + [7, 7, 7])
    match = kv.match_prefix(same)
    # 10 blocks hit: the global group's ten, and each window group's blocks 8 and 9 (nulls before).
    assert match.blocks == first.block_table
    assert match.group_blocks == [[NULL_BLOCK] * 8 + t[8:] for t in first.group_tables]
    assert kv.can_admit(match, 43)
    kv.admit(same, match, 43)
    assert kv.num_used == 14 + 3  # the tail block, once per group
    _check_ref_counts(kv, [first, same])
    # A prompt diverging in block 9 could resume at block 9 only with window blocks 7 and 8: 7 is gone,
    # and so is every earlier pair, so it computes from the start although 9 global blocks are cached.
    shorter = _seq(list(range(36)) + [9])
    assert kv.match_prefix(shorter).blocks == []
    for seq in (first, same):
        kv.free(seq)
    assert kv.num_used == 0


def test_admission_and_growth_count_every_group():
    kv = _hybrid(num_blocks=8)
    seq = _seq(list(range(12)))
    assert not kv.can_admit(PrefixMatch(), 12)  # 3 blocks in each of 3 groups > 8
    assert kv.can_admit(PrefixMatch(), 8)
    kv.admit(seq, PrefixMatch(), 8)
    assert [len(t) for t in kv.tables(seq)] == [2, 2, 2] and kv.num_free == 2
    assert kv.blocks_to_grow(seq, 12) == 3
    seq.num_computed_tokens = 8
    kv.release_out_of_window(seq)  # position 8 sees keys 3..8: block 0 (keys 0..3) is still needed
    assert kv.num_free == 2
    seq.num_computed_tokens = 9
    kv.release_out_of_window(seq)  # position 9 sees keys 4..9: block 0 goes in each window group
    assert kv.num_free == 4
    kv.grow(seq, kv.blocks_to_grow(seq, 12))
    assert [len(t) for t in kv.tables(seq)] == [3, 3, 3] and kv.num_free == 1
    kv.truncate(seq, 8)
    assert [len(t) for t in kv.tables(seq)] == [2, 2, 2] and kv.num_free == 4
    kv.free(seq)
    assert kv.num_free == 8 and kv.num_used == 0


def test_one_group_never_reserves_a_null_block():
    kv = KVCacheManager(4, BS)
    seq = _seq(list(range(16)))
    kv.admit(seq, PrefixMatch(), 16)
    assert sorted(seq.block_table) == [0, 1, 2, 3] and seq.group_tables == []
