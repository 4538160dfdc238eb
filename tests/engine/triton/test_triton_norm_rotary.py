"""Triton RMSNorm (plain and fused with the residual add) and rotary against the torch versions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from vivace.engine.kernels.triton_norm import add_rms_norm, rms_norm  # noqa: E402
from vivace.engine.kernels.triton_rotary import TritonRotary  # noqa: E402
from vivace.engine.models.rope import RotaryEmbedding  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("rows,hidden", [(1, 64), (5, 576), (3, 100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_torch(rows, hidden, dtype):
    gen = torch.Generator().manual_seed(rows + hidden)
    x = (torch.randn(rows, hidden, generator=gen) * 3).to(dtype)
    w = torch.randn(hidden, generator=gen).to(dtype)
    expected = F.rms_norm(x.float(), (hidden,), w.float(), 1e-5)
    torch.testing.assert_close(rms_norm(x, w, 1e-5).float(), expected, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rms_norm_returns_norm_of_sum_and_the_sum(dtype):
    gen = torch.Generator().manual_seed(3)
    x, res = (torch.randn(7, 96, generator=gen).to(dtype) for _ in range(2))
    w = torch.randn(96, generator=gen).to(dtype)
    out, summed = add_rms_norm(x, res, w, 1e-6)
    torch.testing.assert_close(summed, res + x)  # the residual stream rounds like torch's add
    expected = F.rms_norm((res + x).float(), (96,), w.float(), 1e-6)
    torch.testing.assert_close(out.float(), expected, atol=TOL[dtype], rtol=TOL[dtype])


def test_norm_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="weight of shape \\(8,\\) does not match hidden size 16"):
        rms_norm(torch.zeros(2, 16), torch.ones(8), 1e-5)


@pytest.mark.parametrize("heads,head_dim", [(12, 64), (3, 24)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_matches_torch(heads, head_dim, dtype):
    scaling = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}
    rope = RotaryEmbedding(head_dim, 256, 10000.0, scaling, dtype)
    triton_rope = TritonRotary(rope.cos, rope.signed_sin)
    gen = torch.Generator().manual_seed(heads)
    wide = torch.randn(6, heads + 2, head_dim, generator=gen).to(dtype)
    x = wide[:, :heads]  # a strided view, as the model passes q/k out of the fused qkv output
    positions = torch.tensor([0, 1, 17, 63, 64, 255])
    expected = rope.apply(
        x.float(), (rope.cos[positions].unsqueeze(1).float(), rope.signed_sin[positions].unsqueeze(1).float())
    )
    got = triton_rope.apply(x, triton_rope.tables(positions))
    torch.testing.assert_close(got.float(), expected, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 2, 64), (3, 1, 24)])
@pytest.mark.parametrize("dtype,cache_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                               (torch.bfloat16, torch.float32)])  # fmt: skip
def test_apply_and_store_is_rotary_then_the_cache_write(heads, kv_heads, head_dim, dtype, cache_dtype):
    rope = RotaryEmbedding(head_dim, 256, 10000.0, None, dtype)
    triton_rope = TritonRotary(rope.cos, rope.signed_sin)
    gen = torch.Generator().manual_seed(heads + head_dim)
    qkv = torch.randn(5, (heads + 2 * kv_heads) * head_dim, generator=gen).to(dtype)
    qk = qkv[:, : (heads + kv_heads) * head_dim].view(5, heads + kv_heads, head_dim)  # strided, as the model's
    v = qkv[:, (heads + kv_heads) * head_dim :].view(5, kv_heads, head_dim)
    positions = torch.tensor([0, 7, 63, 64, 255])
    slots = torch.tensor([9, 0, 3, 17, 4])
    k_cache, v_cache = (torch.full((20, kv_heads, head_dim), 7.0, dtype=cache_dtype) for _ in range(2))
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    rotated = triton_rope.apply(qk, positions)
    expected_k.index_copy_(0, slots, rotated[:, heads:].to(cache_dtype))
    expected_v.index_copy_(0, slots, v.to(cache_dtype))

    q = triton_rope.apply_and_store(qk, v, positions, k_cache, v_cache, slots)
    assert torch.equal(q, rotated[:, :heads])
    assert torch.equal(k_cache, expected_k)  # other slots untouched
    assert torch.equal(v_cache, expected_v)


def test_apply_and_store_refuses_an_int8_cache():
    rope = RotaryEmbedding(8, 16, 10000.0, None, torch.float32)
    triton_rope = TritonRotary(rope.cos, rope.signed_sin)
    cache = torch.zeros(4, 1, 8, dtype=torch.int8)
    with pytest.raises(ValueError, match="int8 caches"):
        triton_rope.apply_and_store(torch.zeros(1, 2, 8), torch.zeros(1, 1, 8), torch.zeros(1, dtype=torch.long),
                                    cache, cache, torch.zeros(1, dtype=torch.long))  # fmt: skip
