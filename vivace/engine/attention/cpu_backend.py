"""Paged attention by the compiled C++ CPU kernels: one K/V write per layer, then every row attends in place.

A step's rows come as spans, one per scheduled sequence (a decode is a span of one row, a prefill
chunk a span of its tokens), each with its block table and the position of its first row. The kernel
tiles keys at fixed absolute positions with an online softmax and computes every row by the same code
over its own causal context, whatever its batch-mates: results cannot depend on batching, chunking,
prefix reuse or whether a token was decoded or prefilled. The cache is read where it lies (no gather).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from vivace.engine.attention.base import AttentionBackend, block_table_array, tree_rows

if TYPE_CHECKING:
    from vivace.engine.scheduler import ScheduledBatch


@dataclass
class CpuAttentionMetadata:
    """One span per scheduled sequence: its rows, the position of the first, its block table."""

    slot_mapping: torch.Tensor  # [T] long
    block_tables: torch.Tensor  # [N, max_blocks] int32, one per span
    spans: torch.Tensor  # [N, 3] int32: first row of the step, rows, position of the first row
    tree: torch.Tensor | None = None  # [T, 2] int64 per row: first draft-tree node's position, node bitmask


class CpuAttentionBackend(AttentionBackend):
    """The C++ kernels of vivace.engine.cpu_ops (float32 queries on the CPU)."""

    name = "cpu"
    supports_tree_attention = True

    def __init__(self, block_size: int, device: torch.device, ops: ModuleType) -> None:
        super().__init__(block_size, device)
        self.ops = ops

    def build_metadata(self, batch: ScheduledBatch, slot_mapping: torch.Tensor, group: int = 0) -> CpuAttentionMetadata:
        """Each decode, then each prefill chunk, as one span over its block table in KV group `group`."""
        tables, spans = [], []
        row = 0
        for item in [*batch.decodes, *batch.prefills]:
            tables.append(item.seq.table(group))
            spans.append((row, item.num_tokens, item.start))
            row += item.num_tokens
        return CpuAttentionMetadata(
            slot_mapping,
            block_table_array(tables),
            torch.tensor(spans, dtype=torch.int32).view(-1, 3),
            tree_rows(batch, row),
        )

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
        return self.ops.paged_attention(
            q.contiguous(),
            k_cache,
            v_cache,
            meta.block_tables,
            meta.spans,
            self.block_size,
            scale,
            window or 0,
            meta.tree,
        )
