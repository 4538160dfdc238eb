"""The attention backend interface: per-step metadata from a scheduled batch, paged attention, graph hooks.

A backend is chosen once per engine (kernels/select.py) and handed to the model at construction.
Each step the runner asks it for the step's metadata (`build_metadata`), the model calls `forward`
in every layer, and a backend that supports CUDA graphs builds the metadata a captured decode graph
reads from its static buffers (`graph_metadata`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from vivace.engine.scheduler import ScheduledBatch


@dataclass
class GraphBuffers:
    """A captured decode graph's static inputs on the device (the first `size` rows are read)."""

    size: int
    slots: torch.Tensor  # [size] long: cache slot of each row's new token
    block_tables: torch.Tensor  # [size, width] int32
    context_lens: torch.Tensor  # [size] int32
    max_context: int  # bound on any row's context length
    num_sms: int  # the device's streaming multiprocessors (sizes split-K decode)


NO_TREE = 1 << 62  # a row outside any draft tree: its "first node" lies past every key


class AttentionBackend(ABC):
    """Paged attention over a KV cache of [num_slots, kv_heads, head_dim] per layer and K/V.

    slot = block * block_size + offset. A step's rows are its decode tokens first, then its prefill
    chunks' tokens, in the order of `ScheduledBatch.all()`.
    """

    name: str = ""
    supports_cuda_graphs: bool = False
    supports_tree_attention: bool = False  # draft trees' masks (ScheduledSeq.tree) in prefill rows

    def __init__(self, block_size: int, device: torch.device) -> None:
        self.block_size = block_size
        self.device = device

    @abstractmethod
    def build_metadata(self, batch: ScheduledBatch, slot_mapping: torch.Tensor, group: int = 0) -> Any:
        """This step's metadata for KV group `group` (its block tables) on the backend's device;
        `slot_mapping` [T] (host) is each row's cache slot in that group's blocks."""

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: Any,
        scale: float,
        window: int | None = None,
    ) -> torch.Tensor:
        """Write the new k, v [T, KVH, D] into the cache, then attend with q [T, H, D]; returns [T, H, D].

        `window`: a query at position p sees keys at positions (p - window, p] (sliding-window
        attention); None = the whole causal context. Keys before the window are never read.
        """

    def rotate_and_attend(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        rope: Any,
        rope_tables: Any,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: Any,
        scale: float,
        window: int | None = None,
    ) -> torch.Tensor:
        """Rotary (`rope.apply`) on the query and key heads of qk [T, H + KVH, D], then `forward` with
        v [T, KVH, D]. Backends whose rotary kernel also writes the cache override this."""
        qk = rope.apply(qk, rope_tables)
        num_heads = qk.shape[1] - v.shape[1]
        return self.forward(qk[:, :num_heads], qk[:, num_heads:], v, k_cache, v_cache, meta, scale, window)

    def graph_metadata(self, buffers: GraphBuffers) -> Any:
        """Metadata reading a decode graph's static buffers; only backends that support graphs have it."""
        raise NotImplementedError(f"the {self.name!r} attention backend does not run under CUDA graphs")


def block_table_array(tables: list[list[int]], width: int | None = None) -> torch.Tensor:
    """Ragged block tables as an int32 [rows, width] tensor, right-padded with block 0 (never read).

    Filled row by row in numpy: 3x faster than torch.tensor on padded lists (128 rows of ~57 blocks:
    180 us against 600 us), which is host time every step pays.
    """
    if width is None:
        width = max(len(t) for t in tables)
    out = np.zeros((len(tables), width), dtype=np.int32)
    for i, table in enumerate(tables):
        if len(table) > width:
            raise ValueError(f"a block table is wider than {width} blocks")
        out[i, : len(table)] = table
    return torch.from_numpy(out)


def tree_rows(batch: ScheduledBatch, num_rows: int) -> torch.Tensor | None:
    """Per-row draft-tree masks [T, 2] int64 of a step's `num_rows` rows: (cache position of the tree's first
    node, bitmask of the nodes the row sees); None when no sequence proposed a tree (speculative/tree.py)."""
    if all(item.tree is None for item in batch.prefills):
        return None
    out = torch.empty(num_rows, 2, dtype=torch.int64)
    out[:, 0] = NO_TREE
    out[:, 1] = 0
    row = len(batch.decodes)
    for item in batch.prefills:
        row += item.num_tokens
        if item.tree is not None:
            n = len(item.draft)
            out[row - n : row, 0] = item.start + item.num_tokens - n
            out[row - n : row, 1] = torch.tensor(item.tree.ancestor_masks(), dtype=torch.int64)
    return out
