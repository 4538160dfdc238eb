"""Prefix block hashes: sha256 chained over the parent hash and each block's token bytes."""

import hashlib
import struct

from vivace.engine.config import SamplingParams
from vivace.engine.kv_cache_manager import block_hash, extend_block_hashes
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
