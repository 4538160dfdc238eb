"""The Triton varlen paged prefill kernel against the torch reference, under Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from tests.engine.triton.reference import make_paged_cache, poison_before, reference_attention  # noqa: E402
from vivace.engine.attention.triton_prefill import BLOCK_M, paged_prefill  # noqa: E402


def _run(
    chunks: list[tuple[int, int]],
    heads: int,
    kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    seed: int,
    window: int | None = None,
) -> None:
    """chunks: (start, num_new) per sequence; keys 0..start+num_new-1 are in the cache. With a
    window, pages wholly before the first key any of a chunk's rows sees hold NaN (never to be read)."""
    gen = torch.Generator().manual_seed(seed)
    cache = make_paged_cache([s + n for s, n in chunks], kv_heads, head_dim, block_size, dtype, gen)
    keys, values = list(cache.keys), list(cache.values)
    if window is not None:
        for b, (start, _n) in enumerate(chunks):
            poison_before(cache, b, max(0, start - window + 1), block_size)
    total = sum(n for _, n in chunks)
    q_dtype = torch.float32 if dtype is torch.int8 else dtype  # int8 is the cache's dtype only
    q = torch.randn(total, heads, head_dim, generator=gen).to(q_dtype)
    cu = torch.tensor([0] + [sum(n for _, n in chunks[: i + 1]) for i in range(len(chunks))], dtype=torch.int32)
    starts = torch.tensor([s for s, _ in chunks], dtype=torch.int32)
    scale = head_dim**-0.5
    out = paged_prefill(
        q, cache.k, cache.v, cache.tables, cu, starts, max(n for _, n in chunks), block_size, scale, window=window
    )
    tol = 2e-2 if dtype is torch.bfloat16 else 1e-5
    for b, (start, _n) in enumerate(chunks):
        rows = slice(int(cu[b]), int(cu[b + 1]))
        ref = reference_attention(q[rows], keys[b], values[b], scale, first_position=start, window=window)
        torch.testing.assert_close(out[rows].float(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "chunks,heads,kv_heads,head_dim,block_size",
    [
        ([(0, 1)], 2, 2, 16, 16),  # one token, MHA
        ([(0, 40), (0, 7)], 4, 2, 16, 16),  # fresh prompts; one crosses a query tile
        ([(16, 9), (5, 1), (0, BLOCK_M + 3)], 6, 2, 32, 8),  # cached prefixes, odd batch, small pages
        ([(33, 20), (70, 2)], 8, 1, 24, 32),  # MQA, head_dim not a power of two, later chunks
        ([(3, 12)], 9, 3, 64, 16),  # SmolLM2's head shape
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_prefill_matches_reference(chunks, heads, kv_heads, head_dim, block_size, dtype):
    _run(chunks, heads, kv_heads, head_dim, block_size, dtype, seed=len(chunks) * 31 + head_dim)


@pytest.mark.parametrize("kv_heads,heads", [(1, 4), (3, 9)])
def test_int8_cache_rows_are_dequantized_in_the_kernel(kv_heads, heads):
    """Chunks over a cached prefix and fresh starts, all read from int8 rows (values + scale)."""
    _run([(0, 37), (20, 13), (64, 1)], heads, kv_heads, 64, 16, torch.int8, seed=kv_heads)


@pytest.mark.parametrize(
    "chunks,window,block_size",
    [
        ([(0, 70)], 5, 16),  # a fresh prompt, window inside a page
        ([(0, 40), (50, 30), (3, 2)], 37, 16),  # fresh and cached prefixes; rows cross the window's edge
        ([(100, BLOCK_M + 9)], BLOCK_M + 1, 8),  # a chunk far past the window, small pages
        ([(10, 20)], 200, 16),  # a window longer than the context
    ],
)
def test_sliding_window_prefill(chunks, window, block_size):
    _run(chunks, 4, 1, 32, block_size, torch.float32, seed=window, window=window)


def test_rejects_mismatched_offsets():
    cache = make_paged_cache([4, 4], 1, 16, 16, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="2 block-table rows need 3 query offsets and 2 starts, got 2 and 2"):
        paged_prefill(
            torch.zeros(8, 1, 16),
            cache.k,
            cache.v,
            cache.tables,
            torch.tensor([0, 4], dtype=torch.int32),
            torch.tensor([0, 0], dtype=torch.int32),
            4,
            16,
            1.0,
        )
