"""The compiled linear on GGUF blocks (block_linear.cpp) against its torch reference."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.kernels.block_quant import (
    Q4_0,
    Q4_1,
    Q8_0,
    QuantBlocks,
    block_linear_reference,
    tile_rows,
    untile_blocks,
)

pytestmark = pytest.mark.skipif(load_cpu_ops() is None, reason="no C++ compiler here: the torch path is used")
TYPES = [Q4_0, Q4_1, Q8_0]


def op(x: torch.Tensor, blocks: QuantBlocks, bias: torch.Tensor | None) -> torch.Tensor:
    tiles = torch.ops.vivace_cpu.block_tiles(blocks.data, blocks.qtype)
    return torch.ops.vivace_cpu.block_linear(x, tiles, blocks.qtype, blocks.shape[0], bias)


def gguf_blocks(weight: torch.Tensor, qtype: int) -> QuantBlocks:
    data = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType(qtype))
    return QuantBlocks(torch.from_numpy(np.ascontiguousarray(data)), qtype)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("rows", [1, 2, 5, 8, 67, 130])
@pytest.mark.parametrize("n", [61, 69])
def test_kernel_matches_torch_reference(qtype: int, rows: int, n: int) -> None:
    """n odd: the last column tile of 8 is partial; 69 makes 9 tiles, one left over from the pairs of tiles
    that AVX512 builds compute together."""
    torch.manual_seed(rows * 10 + qtype + n)
    blocks = gguf_blocks(torch.randn(n, 192) * 0.05, qtype)
    x = torch.randn(rows, 192) * torch.rand(rows, 1) * 4
    bias = torch.randn(n) if rows % 2 else None
    expected = block_linear_reference(x, blocks, bias)
    torch.testing.assert_close(op(x, blocks, bias), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("qtype", TYPES)
def test_each_row_is_independent_of_its_batch_mates(qtype: int) -> None:
    """Bitwise: a row gives the same output alone, at any position of any batch."""
    torch.manual_seed(qtype)
    blocks = gguf_blocks(torch.randn(33, 128), qtype)
    x = torch.randn(70, 128)
    together = op(x, blocks, None)
    alone = torch.cat([op(x[i : i + 1], blocks, None) for i in range(70)])
    assert torch.equal(together, alone)
    assert torch.equal(op(x[3:10], blocks, None), together[3:10])
    for rows in (2, 3, 4):  # a few rows take another route through the kernel than a batch (block_linear.cpp)
        assert torch.equal(op(x[:rows], blocks, None), together[:rows])


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("rows", [1, 8, 13])
def test_the_tiled_layout_keeps_every_byte(qtype: int, rows: int) -> None:
    blocks = gguf_blocks(torch.randn(rows, 96), qtype)
    tiles = torch.ops.vivace_cpu.block_tiles(blocks.data, qtype)
    assert tiles.shape == ((rows + 7) // 8, blocks.data.shape[1] * 8)
    assert torch.equal(untile_blocks(tiles, qtype, rows).data, blocks.data)
    ids = torch.tensor([rows - 1, 0, rows // 2, rows - 1])
    assert torch.equal(tile_rows(tiles, qtype, ids).data, blocks.data[ids])  # embedding lookups in the tiles


def test_zero_rows_and_bad_shapes() -> None:
    blocks = gguf_blocks(torch.randn(4, 64), Q4_1)
    assert op(torch.zeros(3, 64), blocks, None).abs().max() == 0
    assert op(torch.empty(0, 64), blocks, None).shape == (0, 4)
    with pytest.raises(RuntimeError, match="bytes"):
        op(torch.randn(2, 96), blocks, None)
    with pytest.raises(RuntimeError, match="unsupported GGML type"):
        torch.ops.vivace_cpu.block_tiles(blocks.data, 12)
