"""Paged attention by the compiled C++ CPU kernels: one K/V write per layer, then every row attends in place.

Every token, decode or prefill, is one query row over its own causal context, computed by the same
code independently of its batch-mates: results cannot depend on batching, chunking or prefix reuse.
The cache is read where it lies (no gather).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from vivace.engine.attention.base import AttentionBackend, block_table_array

if TYPE_CHECKING:
    from vivace.engine.scheduler import ScheduledBatch


@dataclass
class CpuAttentionMetadata:
    """One row per token of the step: its block table and causal context length."""

    slot_mapping: torch.Tensor  # [T] long
    block_tables: torch.Tensor  # [T, max_blocks] int32
    context_lens: torch.Tensor  # [T] int32


class CpuAttentionBackend(AttentionBackend):
    """The C++ kernels of vivace.engine.cpu_ops (float32 queries on the CPU)."""

    name = "cpu"

    def __init__(self, block_size: int, device: torch.device, ops: ModuleType) -> None:
        super().__init__(block_size, device)
        self.ops = ops

    def build_metadata(self, batch: ScheduledBatch, slot_mapping: torch.Tensor, group: int = 0) -> CpuAttentionMetadata:
        """Each row's (block table, context length): decodes first, then every prefill token."""
        tables = [item.seq.table(group) for item in batch.decodes]
        lens = [item.start + 1 for item in batch.decodes]
        for item in batch.prefills:
            tables.extend([item.seq.table(group)] * item.num_tokens)
            lens.extend(range(item.start + 1, item.start + item.num_tokens + 1))
        return CpuAttentionMetadata(slot_mapping, block_table_array(tables), torch.tensor(lens, dtype=torch.int32))

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: CpuAttentionMetadata,
        scale: float,
        window: int | None = None,
    ) -> torch.Tensor:
        """One compiled call writes the step's K/V, one attends every row over the cache."""
        self.ops.store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        return self.ops.paged_decode_attention(
            q.contiguous(), k_cache, v_cache, meta.block_tables, meta.context_lens, self.block_size, scale, window or 0
        )
