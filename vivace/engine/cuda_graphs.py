"""Decode steps under CUDA graphs: one graph per padded batch size, replayed over static buffers.

A decode-only step of n sequences runs the graph captured for the smallest size >= n. The rows
beyond n are padding: token 0 at position 0, writing its K/V to a scratch block no sequence owns
and attending over that one slot, so they cost a little work and touch nothing real. The step's
host-side inputs are copied into the static buffers; the graph runs the whole model and the LM
head; sampling then reads the first n rows of logits (on the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vivace.engine.attention.base import AttentionBackend, GraphBuffers, block_table_array
from vivace.engine.models.blocks import DecoderModel


def capture_sizes(max_num_seqs: int) -> list[int]:
    """Batch sizes to capture: powers of two below max_num_seqs, then max_num_seqs itself."""
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    sizes = []
    size = 1
    while size < max_num_seqs:
        sizes.append(size)
        size *= 2
    sizes.append(max_num_seqs)
    return sizes


def padded_size(num_seqs: int, sizes: list[int]) -> int | None:
    """The smallest captured size that holds num_seqs rows; None if none does (run eagerly)."""
    for size in sizes:
        if size >= num_seqs:
            return size
    return None


@dataclass
class DecodeRows:
    """Host-side inputs of a decode-only step, one entry per sequence (or padding row); slots and block
    tables once per KV group (kv_groups.py)."""

    token_ids: list[int]
    positions: list[int]
    slots: list[list[int]]  # [group][row]
    block_tables: list[list[list[int]]]  # [group][row], ragged: each sequence's blocks up to its current length
    context_lens: list[int]


def pad_decode_rows(rows: DecodeRows, size: int, pad_block: int, block_size: int) -> DecodeRows:
    """rows padded to `size` with rows that write and read only the scratch block `pad_block`."""
    extra = size - len(rows.token_ids)
    if extra < 0:
        raise ValueError(f"cannot pad {len(rows.token_ids)} rows down to {size}")
    return DecodeRows(
        token_ids=rows.token_ids + [0] * extra,
        positions=rows.positions + [0] * extra,
        slots=[slots + [pad_block * block_size] * extra for slots in rows.slots],
        block_tables=[tables + [[pad_block]] * extra for tables in rows.block_tables],
        context_lens=rows.context_lens + [1] * extra,
    )


class DecodeGraphs:
    """Captured decode graphs and their static input buffers, for one model and KV cache."""

    def __init__(
        self,
        model: DecoderModel,
        backend: AttentionBackend,
        kv_cache: torch.Tensor,
        block_size: int,
        max_num_seqs: int,
        max_model_len: int,
        pad_block: int,
        device: torch.device,
        num_sms: int,
    ) -> None:
        if not backend.supports_cuda_graphs:
            raise ValueError(f"the {backend.name!r} attention backend does not run under CUDA graphs")
        self.model = model
        self.kv_cache = kv_cache
        self.block_size = block_size
        self.pad_block = pad_block
        self.sizes = capture_sizes(max_num_seqs)
        self.width = -(-max_model_len // block_size)
        n = self.sizes[-1]
        groups = self.num_groups = len(model.kv_layout.groups)
        # The step's per-row integers live in one [3 + groups, n] buffer (token, position, context
        # length, then each KV group's slot) and the block tables in another [groups, n, width]: a
        # step's inputs go up in two copies, from pinned staging buffers reused step after step.
        # Until filled, every row is a padding row.
        rows = torch.tensor([0, 0, 1] + [pad_block * block_size] * groups, dtype=torch.long).unsqueeze(1).repeat(1, n)
        tables = torch.full((groups, n, self.width), pad_block, dtype=torch.int32)
        on_gpu = device.type == "cuda"
        self._host_rows = rows.pin_memory() if on_gpu else rows
        self._host_tables = tables.pin_memory() if on_gpu else tables
        self._uploaded = torch.cuda.Event() if on_gpu else None  # the staging buffers are free again
        self._rows = rows.to(device, copy=True)
        self.token_ids, self.positions, self.context_lens = self._rows[0], self._rows[1], self._rows[2]
        self.tables = tables.to(device, copy=True)
        self._metas = {
            size: [
                backend.graph_metadata(
                    GraphBuffers(
                        size,
                        self._rows[3 + g],
                        self.tables[g],
                        self.context_lens,
                        max_context=max_model_len,
                        num_sms=num_sms,
                    )
                )
                for g in range(groups)
            ]
            for size in self.sizes
        }
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def _forward(self, size: int) -> torch.Tensor:
        hidden = self.model.forward(self.token_ids[:size], self.positions[:size], self._metas[size], self.kv_cache)
        return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every size, largest first so the smaller graphs reuse its memory pool."""
        # Warm-up on a side stream compiles the Triton kernels and settles the allocator.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for size in self.sizes:
                self._forward(size)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        pool = None
        for size in reversed(self.sizes):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self._forward(size)
            pool = graph.pool()
            self._graphs[size] = (graph, logits)
        torch.cuda.synchronize()

    def fits(self, num_seqs: int) -> bool:
        """Whether a decode step of num_seqs sequences can replay a graph."""
        return bool(self._graphs) and num_seqs <= self.sizes[-1]

    @torch.inference_mode()
    def run(self, rows: DecodeRows) -> torch.Tensor:
        """Replay the graph for this step; float32 logits [len(rows), vocab] on the device."""
        n = len(rows.token_ids)
        size = padded_size(n, self.sizes)
        if size is None:
            raise ValueError(f"{n} decode rows exceed the largest captured graph ({self.sizes[-1]})")
        padded = pad_decode_rows(rows, size, self.pad_block, self.block_size)
        width = max(len(t) for t in padded.block_tables[0])
        if self._uploaded is not None and not self._uploaded.query():
            self._uploaded.synchronize()  # never in the engine: each step ends by reading its tokens
        self._host_rows[:, :size] = torch.tensor(
            [padded.token_ids, padded.positions, padded.context_lens, *padded.slots], dtype=torch.long
        )
        for g, tables in enumerate(padded.block_tables):
            self._host_tables[g, :size, :width] = block_table_array(tables, width)
        # Whole contiguous rows go up (a strided copy would stage through pageable memory); columns
        # past a row's context and rows past `size` are never read by this size's graph.
        self._rows.copy_(self._host_rows, non_blocking=True)
        for g in range(self.num_groups):
            self.tables[g, :size].copy_(self._host_tables[g, :size], non_blocking=True)
        if self._uploaded is not None:
            self._uploaded.record()
        graph, logits = self._graphs[size]
        graph.replay()
        return logits[:n]
