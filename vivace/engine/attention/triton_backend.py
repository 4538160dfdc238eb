"""The Triton attention backend: writes the step's K/V into the paged cache, then runs the decode
kernel over the decode rows and the varlen prefill kernel over the prefill chunks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vivace.engine.attention.triton_decode import paged_decode
from vivace.engine.attention.triton_prefill import paged_prefill


@dataclass
class TritonAttentionMetadata:
    """Device tensors for one step; decode rows come first, then the prefill chunks' rows."""

    slot_mapping: torch.Tensor  # [T] long: cache slot of each token of the step
    block_size: int
    num_decode_tokens: int = 0
    decode_block_tables: torch.Tensor | None = None  # [D, W] int32
    decode_context_lens: torch.Tensor | None = None  # [D] int32
    decode_num_splits: int = 1
    decode_max_context: int = 1  # bound on decode context lengths; sizes the splits
    prefill_block_tables: torch.Tensor | None = None  # [P, W] int32
    prefill_cu_query: torch.Tensor | None = None  # [P + 1] int32: row offsets into the prefill rows
    prefill_starts: torch.Tensor | None = None  # [P] int32: position of each chunk's first token
    prefill_max_query_len: int = 0


def triton_paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: TritonAttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Same contract as torch_backend.paged_attention: q [T, H, D], new k, v [T, KVH, D] -> [T, H, D]."""
    k_cache.index_copy_(0, meta.slot_mapping, k.to(k_cache.dtype))
    v_cache.index_copy_(0, meta.slot_mapping, v.to(v_cache.dtype))
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    num_decodes = meta.num_decode_tokens
    if num_decodes:
        paged_decode(
            q[:num_decodes], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
            meta.block_size, scale, meta.decode_num_splits, meta.decode_max_context, out=out[:num_decodes],
        )
    if meta.prefill_cu_query is not None:
        paged_prefill(
            q[num_decodes:], k_cache, v_cache, meta.prefill_block_tables, meta.prefill_cu_query,
            meta.prefill_starts, meta.prefill_max_query_len, meta.block_size, scale, out=out[num_decodes:],
        )
    return out
