"""GGUF block-quantized weights (Q4_0, Q4_1, Q8_0) in torch: the blocks kept as the file stores them,
their dequantization, the per-block activation quantization llama.cpp's dot products use, and the
reference of the compiled block linear (cpu_ops/csrc/block_linear.cpp), which must match it.

A weight row of K values is K / 32 blocks; a block is an fp16 scale d (Q4_1: and an fp16 minimum m)
followed by its 32 quantized values: Q4_0 w = d * (q - 8), Q4_1 w = d * q + m (q in 0..15, low
nibbles are elements 0..15, high nibbles 16..31), Q8_0 w = d * q (q int8).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

BLOCK = 32
# GGML type ids (ggml.h / gguf.GGMLQuantizationType) -> bytes per block of 32.
Q4_0, Q4_1, Q8_0 = 2, 3, 8
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q8_0: 34}
TYPE_NAMES = {Q4_0: "Q4_0", Q4_1: "Q4_1", Q8_0: "Q8_0"}


@dataclass(frozen=True)
class QuantBlocks:
    """One weight [N, K] as a GGUF file's blocks: `data` uint8 [N, K / 32 * block bytes], `qtype` its GGML id."""

    data: torch.Tensor
    qtype: int

    @property
    def shape(self) -> tuple[int, int]:
        """The weight's (out_features, in_features)."""
        rows, row_bytes = self.data.shape
        return rows, row_bytes // BLOCK_BYTES[self.qtype] * BLOCK

    @staticmethod
    def cat(parts: list[QuantBlocks]) -> QuantBlocks | None:
        """The parts stacked by output rows (fused q/k/v, gate/up), or None if their types differ."""
        if len({p.qtype for p in parts}) != 1 or len({p.data.shape[1] for p in parts}) != 1:
            return None
        return QuantBlocks(torch.cat([p.data for p in parts]).contiguous(), parts[0].qtype)


class BlockOps(NamedTuple):
    """The compiled block kernel: `tiles(data, qtype)` lays a matrix's rows out once at load in the order the
    kernel reads them; `linear(x, tiles, qtype, n, bias)` computes x @ W.T (+ bias) for its n rows."""

    tiles: Callable[[torch.Tensor, int], torch.Tensor]
    linear: Callable[[torch.Tensor, torch.Tensor, int, int, torch.Tensor | None], torch.Tensor]


def head_bytes(qtype: int) -> int:
    """A block's scale bytes: fp16 d, and Q4_1's fp16 m."""
    return 4 if qtype == Q4_1 else 2


@functools.cache
def _tile_offsets(qtype: int, nb: int) -> torch.Tensor:
    """[8, nb * block bytes]: where each byte of a tile's row j (in GGUF order) lies in the tile (block_tiles in
    block_linear.cpp: per 8 rows, every block's scales, then every block's 8 rows of quants interleaved 4 bytes
    at a time, quant byte i of row j at (i // 4) * 32 + j * 4 + i % 4)."""
    size, heads = BLOCK_BYTES[qtype], head_bytes(qtype)
    lane = torch.arange(8).view(8, 1, 1)
    block = torch.arange(nb).view(1, nb, 1)
    d = block * 8 * heads + 2 * lane + torch.arange(2)
    parts = [d, d + 16] if heads == 4 else [d]
    byte = torch.arange(size - heads)
    quants = nb * 8 * heads + block * 8 * (size - heads) + byte // 4 * 32 + lane * 4 + byte % 4
    return torch.cat([p.expand(8, nb, -1) for p in parts] + [quants], dim=-1).reshape(8, nb * size)


def _offsets_of(tiles: torch.Tensor, qtype: int) -> torch.Tensor:
    return _tile_offsets(qtype, tiles.shape[1] // (8 * BLOCK_BYTES[qtype])).to(tiles.device)


def untile_blocks(tiles: torch.Tensor, qtype: int, n: int) -> QuantBlocks:
    """The first `n` GGUF rows back from the kernel's tiled layout."""
    rows = tiles[:, _offsets_of(tiles, qtype)]  # [tiles, 8, row bytes]
    return QuantBlocks(rows.reshape(-1, rows.shape[-1])[:n].contiguous(), qtype)


def tile_rows(tiles: torch.Tensor, qtype: int, ids: torch.Tensor) -> QuantBlocks:
    """Rows `ids` [T] of a tiled matrix as GGUF rows (embedding lookups in a tied head's tiles)."""
    where = (ids // 8 * tiles.shape[1]).unsqueeze(1) + _offsets_of(tiles, qtype)[ids % 8]
    return QuantBlocks(tiles.view(-1)[where], qtype)


def unpack_blocks(blocks: QuantBlocks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [N, nb, 32] float, d [N, nb], m [N, nb]) with w = d * q + m (Q4_0's offset of -8 folded into m)."""
    n, row_bytes = blocks.data.shape
    size = BLOCK_BYTES[blocks.qtype]
    raw = blocks.data.view(n, row_bytes // size, size)
    d = raw[..., 0:2].contiguous().view(torch.float16).squeeze(-1).float()
    if blocks.qtype == Q8_0:
        q = raw[..., 2:].contiguous().view(torch.int8).float()
        return q, d, torch.zeros_like(d)
    offset = 4 if blocks.qtype == Q4_1 else 2
    nibbles = raw[..., offset : offset + 16]
    q = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=-1).float()
    m = raw[..., 2:4].contiguous().view(torch.float16).squeeze(-1).float() if blocks.qtype == Q4_1 else -8.0 * d
    return q, d, m


def dequantize_blocks(blocks: QuantBlocks) -> torch.Tensor:
    """The weight as float32 [N, K]."""
    q, d, m = unpack_blocks(blocks)
    return (q * d[..., None] + m[..., None]).reshape(blocks.data.shape[0], -1)


def quantize_q8_0(weight: torch.Tensor) -> QuantBlocks:
    """A float weight [N, K] (K a multiple of 32) as Q8_0 blocks, as ggml quantizes: d = amax / 127 in fp16,
    q = round(w / d). For a GGUF's matrices in types the block kernel does not take (Q5_0, Q4_K, Q6_K, ...),
    so they are still computed on blocks (8.5 bits a weight) rather than by the slower int8 path."""
    n, k = weight.shape
    wb = weight.float().reshape(n, k // BLOCK, BLOCK)
    d = wb.abs().amax(dim=-1) / 127.0
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    x = wb * inv[..., None]
    q = (x.sign() * (x.abs() + 0.5).floor()).clamp_(-127, 127).to(torch.int8)  # C's roundf: ties away from zero
    d16 = d.to(torch.float16).view(torch.uint8).view(n, k // BLOCK, 2)
    raw = torch.cat([d16, q.view(torch.uint8)], dim=-1)
    return QuantBlocks(raw.reshape(n, k // BLOCK * BLOCK_BYTES[Q8_0]).contiguous(), Q8_0)


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row of x [M, K] in int8 blocks of 32: (q [M, nb, 32] float, d [M, nb], s = d * sum(q) [M, nb])."""
    xb = x.float().reshape(x.shape[0], -1, BLOCK)
    amax = xb.abs().amax(dim=-1)
    d = amax / 127.0
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(xb * inv[..., None])
    return q, d, d * q.sum(dim=-1)


def block_linear_reference(x: torch.Tensor, blocks: QuantBlocks, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W.T (+ bias) as the kernel computes it: exact integer block dots, rescaled per block pair."""
    qa, da, sa = quantize_activations(x)
    qw, dw, mw = unpack_blocks(blocks)
    dots = torch.einsum("mbk,nbk->mnb", qa, qw)  # integers below 2**24: exact in float32
    out = (dots * (da[:, None, :] * dw[None])).sum(-1) + sa @ mw.T
    if bias is not None:
        out = out + bias
    return out
