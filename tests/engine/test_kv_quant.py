"""The INT8 KV row format (vivace/engine/attention/kv_quant.py) against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.attention.kv_quant import (
    cache_row_bytes,
    dequantize_rows,
    key_channel_scale,
    key_rotation,
    quantize_rows,
)


def test_a_row_keeps_its_values_and_scale() -> None:
    x = torch.tensor([[1.0, -0.5, 0.25, 127.0 / 64]])  # absmax 127 / 64 -> scale 1 / 64, exact in float16
    rows = quantize_rows(x)
    assert rows.dtype == torch.int8 and rows.shape == (1, 6)
    assert rows[0, :4].tolist() == [64, -32, 16, 127]
    assert rows[0, 4:].view(torch.float16).item() == 1 / 64
    assert torch.equal(dequantize_rows(rows, torch.float32), x)


def test_values_are_quantized_against_the_float16_scale_that_is_stored() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 127.0 * 0.02]])  # absmax / 127 = 0.02, not a float16
    rows = quantize_rows(x)
    stored = rows[0, 4:].view(torch.float16).item()
    assert stored == torch.tensor(0.02).half().item() != 0.02
    assert rows[0, :4].tolist() == [round(v / stored) for v in (1.0, -2.0, 0.5)] + [127]
    assert (dequantize_rows(rows, torch.float32) - x).abs().max() <= stored / 2


@pytest.mark.parametrize("seed", range(4))
def test_error_is_at_most_half_a_step_of_each_rows_own_scale(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 4, 64, generator=gen) * torch.logspace(-3, 3, 50).view(50, 1, 1)  # rows of every size
    rows = quantize_rows(x)
    back = dequantize_rows(rows, torch.float32)
    step = rows[..., -2:].contiguous().view(torch.float16).float()  # each row's stored scale
    assert torch.allclose(step, x.abs().amax(dim=-1, keepdim=True) / 127, rtol=2e-3)  # float16's rounding
    assert ((back - x).abs() <= step / 2 + 1e-6 * step).all()


def test_a_zero_row_stays_zero_and_finite() -> None:
    back = dequantize_rows(quantize_rows(torch.zeros(2, 3, 16)), torch.float32)
    assert torch.equal(back, torch.zeros(2, 3, 16))


def test_rows_beyond_float16s_range_stay_finite() -> None:
    x = torch.tensor([[1e-10, -2e-10, 0.0], [1e8, -3e7, 5.0]])  # scales under and over float16's range
    back = dequantize_rows(quantize_rows(x), torch.float32)
    assert torch.isfinite(back).all()
    assert torch.equal(back[0], torch.zeros(3))  # too small for a float16 scale: zero, not NaN
    assert back[1, 0] == 127 * 65504  # the largest scale float16 holds


def test_row_bytes_are_about_half_of_bfloat16() -> None:
    assert cache_row_bytes(64, torch.bfloat16) == 128
    assert cache_row_bytes(64, torch.int8) == 66
    assert cache_row_bytes(64, torch.float32) == 256


@pytest.mark.parametrize("head_dim", [64, 256, 80])
def test_the_key_rotation_is_orthonormal_so_scores_do_not_change(head_dim: int) -> None:
    rot = key_rotation(head_dim, torch.device("cpu"), torch.float64)
    assert torch.allclose(rot @ rot.T, torch.eye(head_dim, dtype=torch.float64), atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(5, head_dim, generator=gen, dtype=torch.float64),
        torch.randn(7, head_dim, generator=gen, dtype=torch.float64),
    )
    assert torch.allclose((q @ rot) @ (k @ rot).T, q @ k.T, atol=1e-10)


def test_rotated_keys_with_outlier_channels_lose_less_to_int8() -> None:
    # Keys as attention layers make them: a few channels an order of magnitude above the rest.
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(512, 64, generator=gen)
    k[:, [3, 35]] += 30.0
    q = torch.randn(16, 64, generator=gen)
    exact = q @ k.T

    def score_error(rot: torch.Tensor) -> float:
        back = dequantize_rows(quantize_rows(k @ rot), torch.float32)
        return ((q @ rot) @ back.T - exact).abs().mean().item()

    plain = score_error(torch.eye(64))
    rotated = score_error(key_rotation(64, torch.device("cpu"), torch.float32))
    assert rotated < plain / 3, (rotated, plain)


def test_the_key_channel_scale_follows_the_norm_weights_over_rotary_pairs() -> None:
    g_q = torch.tensor([4.0, 1.0, 0.0, 2.0, 4.0, 1.0, 0.0, 2.0])
    g_k = torch.tensor([1.0, 4.0, 3.0, 0.0, 1.0, 4.0, 3.0, 0.0])
    a = key_channel_scale(g_q, g_k)
    assert torch.equal(a[:4], a[4:])  # channel c and c + 4 are one rotary pair
    assert torch.allclose(a[:2], torch.tensor([2.0, 0.5]))  # sqrt(g_q / g_k)
    assert torch.equal(a[2:4], torch.ones(2))  # a channel zero in the queries or the keys keeps a = 1
    # pairs mix: the pair's root mean square, not each channel's own weight
    mixed = key_channel_scale(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 1.0]))
    assert torch.allclose(mixed, torch.full((2,), (12.5**0.5) ** 0.5))


def test_scaled_and_rotated_keys_leave_scores_unchanged_and_lose_less_to_int8() -> None:
    # A QK-norm layer's queries and keys: each channel's size set by its norm weight, large in the
    # queries where it is small in the keys and the other way round.
    gen = torch.Generator().manual_seed(0)
    head_dim = 64
    g_q = (torch.rand(head_dim // 2, generator=gen, dtype=torch.float64) * 6 - 3).exp().repeat(2)  # one per rotary pair
    g_k = 1 / g_q * 4
    q = torch.randn(16, head_dim, generator=gen, dtype=torch.float64) * g_q
    k = torch.randn(512, head_dim, generator=gen, dtype=torch.float64) * g_k
    exact = q @ k.T
    rot = key_rotation(head_dim, torch.device("cpu"), torch.float64)
    a = key_channel_scale(g_q, g_k).double()
    assert torch.allclose((q / a) @ rot @ ((k * a) @ rot).T, exact, atol=1e-9)

    def score_error(scale: torch.Tensor) -> float:
        back = dequantize_rows(quantize_rows((k * scale) @ rot), torch.float64)
        return (((q / scale) @ rot) @ back.T - exact).abs().mean().item()

    assert score_error(a) < score_error(torch.ones(head_dim, dtype=torch.float64)) / 2
