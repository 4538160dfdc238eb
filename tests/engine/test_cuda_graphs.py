"""CUDA-graph padding logic as pure functions (the graphs themselves need a GPU)."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.attention.base import block_table_array
from vivace.engine.cuda_graphs import DecodeRows, capture_sizes, pad_decode_rows, padded_size


def test_capture_sizes() -> None:
    assert capture_sizes(1) == [1]
    assert capture_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert capture_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    with pytest.raises(ValueError, match="max_num_seqs must be >= 1, got 0"):
        capture_sizes(0)


@pytest.mark.parametrize("n,expected", [(1, 1), (3, 4), (4, 4), (33, 48), (48, 48), (49, None)])
def test_padded_size(n: int, expected: int | None) -> None:
    assert padded_size(n, capture_sizes(48)) == expected


def test_padding_rows_touch_only_the_scratch_block() -> None:
    rows = DecodeRows(
        token_ids=[5, 6],
        positions=[17, 3],
        slots=[[33, 3], [49, 19]],  # two KV groups
        block_tables=[[[4, 2], [0]], [[5, 3], [1]]],
        context_lens=[18, 4],
    )
    padded = pad_decode_rows(rows, 4, pad_block=9, block_size=16)
    assert padded.token_ids == [5, 6, 0, 0]
    assert padded.positions == [17, 3, 0, 0]
    assert padded.slots == [[33, 3, 144, 144], [49, 19, 144, 144]]  # block 9's first slot, in every group
    assert padded.block_tables == [[[4, 2], [0], [9], [9]], [[5, 3], [1], [9], [9]]]
    assert padded.context_lens == [18, 4, 1, 1]
    assert rows.token_ids == [5, 6]  # the input is left alone
    with pytest.raises(ValueError, match="cannot pad 2 rows down to 1"):
        pad_decode_rows(rows, 1, pad_block=9, block_size=16)


def test_block_table_array() -> None:
    assert torch.equal(block_table_array([[4, 2], [9]], 3), torch.tensor([[4, 2, 0], [9, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="wider than 1 blocks"):
        block_table_array([[4, 2]], 1)
