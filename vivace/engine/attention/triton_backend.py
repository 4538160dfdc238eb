"""The Triton attention backend: writes the step's K/V into the paged cache, then runs the decode
kernel over the decode rows and the varlen prefill kernel over the prefill chunks. Runs under CUDA
graphs (decode-only steps), and on CPU under Triton's interpreter (TRITON_INTERPRET=1) for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vivace.engine.attention.base import AttentionBackend, GraphBuffers, block_table_array, tree_rows
from vivace.engine.attention.kv_quant import to_cache
from vivace.engine.attention.triton_decode import num_decode_splits, paged_decode
from vivace.engine.attention.triton_prefill import paged_prefill
from vivace.engine.device_io import upload
from vivace.engine.kernels.triton_rotary import TritonRotary

if TYPE_CHECKING:
    from vivace.engine.scheduler import ScheduledBatch

DEFAULT_NUM_SMS = 132  # an H100's; sizes split-K decode where the device does not say


@dataclass
class TritonAttentionMetadata:
    """Device tensors for one step; decode rows come first, then the prefill chunks' rows."""

    slot_mapping: torch.Tensor  # [T] long: cache slot of each token of the step
    num_decode_tokens: int = 0
    decode_block_tables: torch.Tensor | None = None  # [D, W] int32
    decode_context_lens: torch.Tensor | None = None  # [D] int32
    decode_num_splits: int = 1
    decode_max_context: int = 1  # bound on decode context lengths; sizes the splits
    prefill_block_tables: torch.Tensor | None = None  # [P, W] int32
    prefill_cu_query: torch.Tensor | None = None  # [P + 1] int32: row offsets into the prefill rows
    prefill_starts: torch.Tensor | None = None  # [P] int32: position of each chunk's first token
    prefill_max_query_len: int = 0
    prefill_tree: torch.Tensor | None = None  # [prefill rows, 2] int64 draft-tree masks (base.tree_rows)


class TritonAttentionBackend(AttentionBackend):
    """Triton paged decode (split-K) and varlen paged prefill kernels."""

    name = "triton"
    supports_cuda_graphs = True
    supports_tree_attention = True

    def __init__(
        self, block_size: int, device: torch.device, num_kv_heads: int, num_sms: int = DEFAULT_NUM_SMS
    ) -> None:
        super().__init__(block_size, device)
        self.num_kv_heads = num_kv_heads
        self.num_sms = num_sms

    def build_metadata(
        self, batch: ScheduledBatch, slot_mapping: torch.Tensor, group: int = 0
    ) -> TritonAttentionMetadata:
        """Block tables, context lengths and query offsets, uploaded without blocking the host."""
        dev = self.device
        decodes, prefills = batch.decodes, batch.prefills
        meta = TritonAttentionMetadata(slot_mapping=upload(slot_mapping, torch.long, dev))
        if decodes:
            lens = [item.start + 1 for item in decodes]
            max_len = max(lens)
            meta.num_decode_tokens = len(decodes)
            meta.decode_block_tables = upload(
                block_table_array([item.seq.table(group) for item in decodes]), torch.int32, dev
            )
            meta.decode_context_lens = upload(lens, torch.int32, dev)
            meta.decode_max_context = max_len
            meta.decode_num_splits = num_decode_splits(max_len, len(decodes), self.num_kv_heads, self.num_sms)
        if prefills:
            meta.prefill_block_tables = upload(
                block_table_array([item.seq.table(group) for item in prefills]), torch.int32, dev
            )
            offsets = [0]
            for item in prefills:
                offsets.append(offsets[-1] + item.num_tokens)
            meta.prefill_cu_query = upload(offsets, torch.int32, dev)
            meta.prefill_starts = upload([item.start for item in prefills], torch.int32, dev)
            meta.prefill_max_query_len = max(item.num_tokens for item in prefills)
            tree = tree_rows(batch, len(decodes) + offsets[-1])
            if tree is not None:
                meta.prefill_tree = upload(tree[len(decodes) :], torch.int64, dev)
        return meta

    def graph_metadata(self, buffers: GraphBuffers) -> TritonAttentionMetadata:
        """Decode-only metadata over a graph's static buffers, split for the longest possible context."""
        size = buffers.size
        return TritonAttentionMetadata(
            slot_mapping=buffers.slots[:size],
            num_decode_tokens=size,
            decode_block_tables=buffers.block_tables[:size],
            decode_context_lens=buffers.context_lens[:size],
            decode_num_splits=num_decode_splits(buffers.max_context, size, self.num_kv_heads, buffers.num_sms),
            decode_max_context=buffers.max_context,
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: TritonAttentionMetadata,
        scale: float,
        window: int | None = None,
    ) -> torch.Tensor:
        """q [T, H, D], new k, v [T, KVH, D] -> [T, H, D]."""
        k_cache.index_copy_(0, meta.slot_mapping, to_cache(k, k_cache))
        v_cache.index_copy_(0, meta.slot_mapping, to_cache(v, v_cache))
        return self._attend(q, k_cache, v_cache, meta, scale, window)

    def rotate_and_attend(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        rope: Any,
        rope_tables: Any,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: TritonAttentionMetadata,
        scale: float,
        window: int | None = None,
    ) -> torch.Tensor:
        """Float caches under the Triton rotary: one kernel rotates q and k and writes k and v to the cache."""
        if k_cache.dtype == torch.int8 or not isinstance(rope, TritonRotary):
            return super().rotate_and_attend(qk, v, rope, rope_tables, k_cache, v_cache, meta, scale, window)
        q = rope.apply_and_store(qk, v, rope_tables, k_cache, v_cache, meta.slot_mapping)
        return self._attend(q, k_cache, v_cache, meta, scale, window)

    def _attend(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: TritonAttentionMetadata,
        scale: float,
        window: int | None,
    ) -> torch.Tensor:
        """q [T, H, D] over the caches, which already hold this step's keys and values -> [T, H, D]."""
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        num_decodes = meta.num_decode_tokens
        if num_decodes:
            paged_decode(
                q[:num_decodes],
                k_cache,
                v_cache,
                meta.decode_block_tables,
                meta.decode_context_lens,
                self.block_size,
                scale,
                meta.decode_num_splits,
                meta.decode_max_context,
                out=out[:num_decodes],
                window=window,
            )
        if meta.prefill_cu_query is not None:
            paged_prefill(
                q[num_decodes:],
                k_cache,
                v_cache,
                meta.prefill_block_tables,
                meta.prefill_cu_query,
                meta.prefill_starts,
                meta.prefill_max_query_len,
                self.block_size,
                scale,
                out=out[num_decodes:],
                window=window,
                tree=meta.prefill_tree,
            )
        return out
