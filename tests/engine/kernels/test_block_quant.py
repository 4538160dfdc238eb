"""The torch reference for GGUF blocks against the gguf package's own quantizer and dequantizer."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from vivace.engine.kernels.block_quant import (
    Q4_0,
    Q4_1,
    Q8_0,
    QuantBlocks,
    block_linear_reference,
    dequantize_blocks,
    quantize_activations,
    quantize_q8_0,
)

TYPES = [Q4_0, Q4_1, Q8_0]


def gguf_blocks(weight: torch.Tensor, qtype: int) -> QuantBlocks:
    """The weight quantized by the gguf package (llama.cpp's formats, written by others)."""
    data = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType(qtype))
    return QuantBlocks(torch.from_numpy(np.ascontiguousarray(data)), qtype)


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_matches_gguf(qtype: int) -> None:
    torch.manual_seed(qtype)
    blocks = gguf_blocks(torch.randn(24, 128), qtype)
    expected = gguf.quants.dequantize(blocks.data.numpy(), gguf.GGMLQuantizationType(qtype))
    assert blocks.shape == (24, 128)
    np.testing.assert_array_equal(dequantize_blocks(blocks).numpy(), expected)


def test_q8_0_requantization_matches_the_gguf_quantizer() -> None:
    """Matrices in types the kernel does not take become Q8_0 as llama.cpp's own quantizer writes it."""
    torch.manual_seed(0)
    weight = torch.randn(40, 256) * torch.logspace(-3, 1, 40)[:, None]
    weight[3, 32:64] = 0.0  # an all-zero block: scale 0, values 0
    ours = quantize_q8_0(weight)
    reference = gguf_blocks(weight, Q8_0)
    assert ours.qtype == Q8_0 and ours.shape == (40, 256)
    assert torch.equal(ours.data, reference.data)  # byte for byte


def test_activation_blocks_round_trip_within_half_a_step() -> None:
    x = torch.randn(5, 96) * torch.logspace(-3, 3, 5)[:, None]
    x[2, 32:64] = 0  # an all-zero block: scale 0, no division by zero
    q, d, s = quantize_activations(x)
    assert q.abs().max() <= 127 and torch.equal(q, q.round())
    err = (q * d[..., None]).reshape(5, 96) - x
    assert (err.abs().reshape(5, 3, 32) <= d[..., None] / 2 * (1 + 1e-5)).all()
    torch.testing.assert_close(s, d * q.sum(-1))
    assert d[2, 1] == 0 and (q[2, 1] == 0).all()


@pytest.mark.parametrize("qtype", TYPES)
def test_reference_linear_is_close_to_float_matmul_on_dequantized_weights(qtype: int) -> None:
    torch.manual_seed(10 + qtype)
    blocks = gguf_blocks(torch.randn(40, 256), qtype)
    x, bias = torch.randn(6, 256), torch.randn(40)
    exact = x @ dequantize_blocks(blocks).T + bias
    got = block_linear_reference(x, blocks, bias)
    # int8 activations per block of 32: relative error well under 1% of the outputs' spread.
    assert (got - exact).abs().max() < 0.01 * exact.std() * 3
    assert torch.corrcoef(torch.stack([got.ravel(), exact.ravel()]))[0, 1] > 0.9999


def test_cat_stacks_rows_and_refuses_mixed_types() -> None:
    a, b = gguf_blocks(torch.randn(8, 64), Q4_1), gguf_blocks(torch.randn(4, 64), Q4_1)
    fused = QuantBlocks.cat([a, b])
    assert fused is not None and fused.shape == (12, 64)
    torch.testing.assert_close(dequantize_blocks(fused), torch.cat([dequantize_blocks(a), dequantize_blocks(b)]))
    assert QuantBlocks.cat([a, gguf_blocks(torch.randn(4, 64), Q8_0)]) is None
