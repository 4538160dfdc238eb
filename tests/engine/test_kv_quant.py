"""The INT8 KV row format (vivace/engine/attention/kv_quant.py) against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.attention.kv_quant import cache_row_bytes, dequantize_rows, quantize_rows


def test_a_row_keeps_its_values_and_scale() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 127.0 * 0.02]])  # absmax 2.54 -> scale 0.02
    rows = quantize_rows(x)
    assert rows.dtype == torch.int8 and rows.shape == (1, 8)
    assert rows[0, :4].tolist() == [50, -100, 25, 127]
    assert rows[0, 4:].view(torch.float32).item() == pytest.approx(0.02)
    assert torch.allclose(dequantize_rows(rows, torch.float32), x, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_error_is_at_most_half_a_step_of_each_rows_own_scale(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 4, 64, generator=gen) * torch.logspace(-3, 3, 50).view(50, 1, 1)  # rows of every size
    back = dequantize_rows(quantize_rows(x), torch.float32)
    step = x.abs().amax(dim=-1, keepdim=True) / 127
    assert ((back - x).abs() <= step / 2 + 1e-6 * step).all()


def test_a_zero_row_stays_zero_and_finite() -> None:
    back = dequantize_rows(quantize_rows(torch.zeros(2, 3, 16)), torch.float32)
    assert torch.equal(back, torch.zeros(2, 3, 16))


def test_row_bytes_are_about_half_of_bfloat16() -> None:
    assert cache_row_bytes(64, torch.bfloat16) == 128
    assert cache_row_bytes(64, torch.int8) == 68
    assert cache_row_bytes(64, torch.float32) == 256
