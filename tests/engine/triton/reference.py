"""Torch references and paged-cache builders shared by the kernel tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vivace.engine.attention.kv_quant import from_cache, to_cache


@dataclass
class PagedCache:
    """K/V of several sequences scattered over shuffled pages, plus each sequence's dense copy."""

    k: torch.Tensor  # [slots, kv_heads, head_dim]
    v: torch.Tensor
    tables: torch.Tensor  # [num_seqs, max_blocks] int32
    keys: list[torch.Tensor]  # per sequence [len, kv_heads, head_dim]
    values: list[torch.Tensor]


def make_paged_cache(
    lengths: list[int], kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype, gen: torch.Generator
) -> PagedCache:
    """Random K/V for sequences of `lengths` tokens in a cache whose pages are handed out shuffled.

    An int8 `dtype` stores quantized rows (attention/kv_quant.py); the dense copies are then the
    values those rows stand for, so the references attend over what the kernels read.
    """
    blocks_each = [-(-n // block_size) for n in lengths]
    total = sum(blocks_each) + 1
    order = torch.randperm(total, generator=gen).tolist()
    k = to_cache(torch.randn(total * block_size, kv_heads, head_dim, generator=gen), torch.empty(0, dtype=dtype))
    v = to_cache(torch.randn(total * block_size, kv_heads, head_dim, generator=gen), torch.empty(0, dtype=dtype))
    width = max(blocks_each)
    tables, keys, values = [], [], []
    for n, count in zip(lengths, blocks_each, strict=True):
        pages = [order.pop() for _ in range(count)]
        tables.append(pages + [0] * (width - count))
        slots = torch.tensor([pages[p // block_size] * block_size + p % block_size for p in range(n)], dtype=torch.long)
        keys.append(from_cache(k[slots], torch.float32))
        values.append(from_cache(v[slots], torch.float32))
    return PagedCache(k, v, torch.tensor(tables, dtype=torch.int32), keys, values)


def poison_before(cache: PagedCache, seq: int, first_key: int, block_size: int) -> None:
    """NaN into the pages of sequence `seq` that hold only keys before `first_key`: a kernel that
    reads them (as a sliding window must not) turns its output NaN."""
    for block in range(first_key // block_size):
        page = int(cache.tables[seq, block])
        cache.k[page * block_size : (page + 1) * block_size] = float("nan")
        cache.v[page * block_size : (page + 1) * block_size] = float("nan")


def reference_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    scale: float,
    first_position: int,
    window: int | None = None,
) -> torch.Tensor:
    """Float32 causal attention of q [n, H, D] at positions first_position.. over keys [L, KVH, D];
    with a `window`, a query at position p sees keys (p - window, p] only."""
    heads, kv_heads = q.shape[1], keys.shape[1]
    group = heads // kv_heads
    k = keys.float().repeat_interleave(group, dim=1).transpose(0, 1)  # [H, L, D]
    v = values.float().repeat_interleave(group, dim=1).transpose(0, 1)
    scores = torch.einsum("nhd,hld->hnl", q.float(), k) * scale
    positions = torch.arange(first_position, first_position + q.shape[0])
    mask = torch.arange(keys.shape[0])[None, :] <= positions[:, None]
    if window is not None:
        mask &= torch.arange(keys.shape[0])[None, :] > positions[:, None] - window
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hnl,hld->nhd", scores.softmax(-1), v)
