"""Paged attention in plain PyTorch: the CPU path and the reference for other backends.

The KV cache of a layer is two tensors of shape [num_slots, kv_heads, head_dim]; slot =
block * block_size + offset. New K/V of every token in the step are written first, then
decodes attend in one batched call and each prefill chunk in one call over its context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class PrefillSpan:
    """One prefill chunk: rows [start, start + num_tokens) of the step attend over `context_len` keys."""

    start: int
    num_tokens: int
    context_len: int
    slots: torch.Tensor | None  # [context_len] cache slots when part of the context was cached
    mask: torch.Tensor  # [num_tokens, context_len] bool, True = attend


@dataclass
class AttentionMetadata:
    """Where each token's K/V goes and what each query attends to, for one step."""

    slot_mapping: torch.Tensor  # [T] slot of each token of the step
    num_decode_tokens: int = 0
    decode_slots: torch.Tensor | None = None  # [D, L] slots of each decode's context, padded
    decode_mask: torch.Tensor | None = None  # [D, 1, 1, L] bool, True = attend
    prefills: list[PrefillSpan] = field(default_factory=list)
    # Set when the compiled CPU kernel runs: it then handles every row (decodes and prefill tokens,
    # num_decode_tokens = all rows) reading the cache in place, no gather.
    decode_kernel: Any = None
    decode_block_tables: torch.Tensor | None = None  # [D, max_blocks] int32
    decode_context_lens: torch.Tensor | None = None  # [D] int32
    block_size: int = 16


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Attention for q [T, H, D] with new k, v [T, KVH, D]; writes k, v into the cache. Returns [T, H, D]."""
    if meta.decode_kernel is not None:  # every row is the compiled kernel's: one call writes the cache
        meta.decode_kernel.store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
    else:
        k_stored, v_stored = k.to(k_cache.dtype), v.to(v_cache.dtype)
        k_cache.index_copy_(0, meta.slot_mapping, k_stored)
        v_cache.index_copy_(0, meta.slot_mapping, v_stored)
        if k_stored.dtype != k.dtype and meta.prefills:
            # Attend over the values as stored, so a prompt gives the same result whether its
            # prefix was computed now or reused from the cache.
            k, v = k_stored.to(k.dtype), v_stored.to(v.dtype)
    num_heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    group = num_heads // kv_heads
    out = torch.empty_like(q)
    num_decodes = meta.num_decode_tokens
    if num_decodes and meta.decode_kernel is not None:
        out[:num_decodes] = meta.decode_kernel.paged_decode_attention(
            q[:num_decodes].contiguous(), k_cache, v_cache,
            meta.decode_block_tables, meta.decode_context_lens, meta.block_size, scale,
        )
    elif num_decodes:
        # Queries that share a KV head ride together as a short "query length" of `group`.
        qd = q[:num_decodes].view(num_decodes, kv_heads, group, head_dim)
        kd = k_cache[meta.decode_slots].to(q.dtype).transpose(1, 2)  # [D, KVH, L, D]
        vd = v_cache[meta.decode_slots].to(q.dtype).transpose(1, 2)
        od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=meta.decode_mask, scale=scale)
        out[:num_decodes] = od.reshape(num_decodes, num_heads, head_dim)
    for span in meta.prefills:
        rows = slice(span.start, span.start + span.num_tokens)
        qp = q[rows].transpose(0, 1)  # [H, n, D]
        if span.slots is None:
            kp, vp = k[rows].transpose(0, 1), v[rows].transpose(0, 1)
        else:
            kp = k_cache[span.slots].to(q.dtype).transpose(0, 1)
            vp = v_cache[span.slots].to(q.dtype).transpose(0, 1)
        op = F.scaled_dot_product_attention(
            qp, kp, vp, attn_mask=span.mask, scale=scale, enable_gqa=group > 1
        )
        out[rows] = op.transpose(0, 1)
    return out
