"""The Triton paged decode kernel against the torch reference, under Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from tests.engine.triton.reference import make_paged_cache, poison_before, reference_attention  # noqa: E402
from vivace.engine.attention.triton_decode import BLOCK_N, num_decode_splits, paged_decode  # noqa: E402


@pytest.mark.parametrize(
    "num_seqs,heads,kv_heads,head_dim,block_size,max_len,num_splits",
    [
        (1, 4, 4, 16, 16, 1, 1),  # one key; MHA
        (3, 6, 2, 32, 16, 70, 2),  # GQA 3, contexts cross pages and the BLOCK_N step
        (5, 8, 1, 16, 8, 100, 3),  # MQA, small pages, odd batch
        (2, 4, 2, 24, 32, 2 * BLOCK_N + 5, 4),  # head_dim not a power of two; more splits than needed
        (4, 9, 3, 64, 16, 130, 5),  # SmolLM2's head shape (9 heads over 3 KV heads)
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_decode_matches_reference(num_seqs, heads, kv_heads, head_dim, block_size, max_len, num_splits, dtype):
    gen = torch.Generator().manual_seed(num_seqs * 1000 + max_len)
    lens = torch.randint(1, max_len + 1, (num_seqs,), generator=gen)
    lens[0] = max_len
    cache = make_paged_cache(lens.tolist(), kv_heads, head_dim, block_size, dtype, gen)
    q = torch.randn(num_seqs, heads, head_dim, generator=gen).to(dtype)
    scale = head_dim**-0.5
    out = paged_decode(
        q, cache.k, cache.v, cache.tables, lens.to(torch.int32), block_size, scale, num_splits, max_context=max_len
    )
    for b in range(num_seqs):
        n = int(lens[b])
        ref = reference_attention(q[b : b + 1], cache.keys[b][:n], cache.values[b][:n], scale, first_position=n - 1)
        tol = 1e-5 if dtype is torch.float32 else 2e-2
        torch.testing.assert_close(out[b].float(), ref[0], atol=tol, rtol=tol)


@pytest.mark.parametrize("kv_heads,heads,head_dim", [(1, 4, 16), (3, 9, 64)])
def test_int8_cache_rows_are_dequantized_in_the_kernel(kv_heads, heads, head_dim):
    """An int8 KV cache (values + a float16 scale per row) read in place by the decode kernel."""
    gen = torch.Generator().manual_seed(kv_heads)
    lens = torch.tensor([77, 5, 40])
    cache = make_paged_cache(lens.tolist(), kv_heads, head_dim, 16, torch.int8, gen)
    assert cache.k.dtype == torch.int8 and cache.k.shape[-1] == head_dim + 2
    q = torch.randn(3, heads, head_dim, generator=gen)
    scale = head_dim**-0.5
    out = paged_decode(q, cache.k, cache.v, cache.tables, lens.to(torch.int32), 16, scale, 2, max_context=77)
    for b in range(3):
        n = int(lens[b])
        ref = reference_attention(q[b : b + 1], cache.keys[b][:n], cache.values[b][:n], scale, first_position=n - 1)
        torch.testing.assert_close(out[b], ref[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "window,num_splits,block_size",
    [(5, 1, 16), (37, 3, 16), (BLOCK_N + 1, 2, 8), (200, 2, 16)],  # inside a page, across pages, > contexts
)
def test_sliding_window_reads_only_the_window(window, num_splits, block_size):
    """Pages wholly before a row's window hold NaN: the output is finite only if they are never read."""
    gen = torch.Generator().manual_seed(window)
    lens = [130, 60, 3, window + 1]
    heads, kv_heads, head_dim = 4, 1, 32  # MQA, as Gemma 3
    cache = make_paged_cache(lens, kv_heads, head_dim, block_size, torch.float32, gen)
    for b, n in enumerate(lens):
        poison_before(cache, b, max(0, n - window), block_size)
    q = torch.randn(len(lens), heads, head_dim, generator=gen)
    out = paged_decode(
        q,
        cache.k,
        cache.v,
        cache.tables,
        torch.tensor(lens, dtype=torch.int32),
        block_size,
        0.2,
        num_splits,
        max_context=max(lens),
        window=window,
    )
    for b, n in enumerate(lens):
        ref = reference_attention(q[b : b + 1], cache.keys[b][:n], cache.values[b][:n], 0.2, n - 1, window)
        torch.testing.assert_close(out[b], ref[0], atol=1e-5, rtol=1e-5)


def test_strided_query_view_is_read_in_place():
    """q as the model passes it: a view into a wider [T, heads, D] tensor (rotary output)."""
    gen = torch.Generator().manual_seed(7)
    cache = make_paged_cache([20, 3], 2, 16, 16, torch.float32, gen)
    wide = torch.randn(2, 6, 16, generator=gen)  # 4 query heads + 2 key heads
    q = wide[:, :4]
    lens = torch.tensor([20, 3], dtype=torch.int32)
    out = paged_decode(q, cache.k, cache.v, cache.tables, lens, 16, 0.25, 2, max_context=20)
    expected = paged_decode(q.contiguous(), cache.k, cache.v, cache.tables, lens, 16, 0.25, 2, max_context=20)
    torch.testing.assert_close(out, expected)


def test_rejects_heads_that_do_not_group():
    cache = make_paged_cache([4], 3, 16, 16, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="5 query heads do not split into 3 KV heads"):
        paged_decode(
            torch.zeros(1, 5, 16), cache.k, cache.v, cache.tables, torch.tensor([4], dtype=torch.int32), 16, 1.0, 1, 4
        )


@pytest.mark.parametrize(
    "max_context,num_seqs,kv_heads,expected",
    [
        (100, 64, 8, 1),  # enough programs already
        (8192, 1, 8, 32),  # one long sequence: split up to the cap
        (64, 1, 8, 1),  # too short to be worth splitting
        (1024, 2, 4, 8),  # bounded by keys per split (4 inner steps)
    ],
)
def test_num_decode_splits(max_context, num_seqs, kv_heads, expected):
    assert num_decode_splits(max_context, num_seqs, kv_heads, num_sms=132) == expected
