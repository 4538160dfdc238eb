"""Linear layers in the engine's weight formats: plain float, int8 weights for CPU decode speed, or a
GGUF's own 4/8-bit blocks (CPU decode reads the file's bytes per weight, no more)."""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

from vivace.engine.kernels.block_quant import (
    BlockOps,
    QuantBlocks,
    block_linear_reference,
    dequantize_blocks,
    tile_rows,
    untile_blocks,
)


class FloatLinear:
    """y = x @ W.T + b in the weight's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.contiguous()
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8DynamicLinear:
    """Per-channel int8 weights; activations quantized per row on each call; float32 in and out.

    Decode on CPU is bound by the bytes of weights read per step; int8 reads a quarter of float32.
    Per-row (not per-tensor) activation scales keep each row's result independent of the other
    rows in the batch, and one outlier token from spoiling everyone's precision.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, ops: ModuleType | None = None) -> None:
        """`ops`: the compiled CPU ops (kernels.int8_ops), or None for the torch reference."""
        w = weight.float()
        scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.weight_t = (w / scales[:, None]).round().to(torch.int8).t()  # [K, N], column-major
        self.scales = scales
        self.bias = None if bias is None else bias.float()
        self._kernels = ops
        # The same weights packed for the compiled small-batch kernel (empty where it is not built).
        self._packed = self._kernels.pack_int8_weight(self.weight_t) if self._kernels is not None else (None, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernels is not None:  # the same math in one call (the torch code below is the reference)
            return self._kernels.int8_linear(x, self.weight_t, self.scales, self.bias, *self._packed)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same computation in torch ops."""
        row_scale = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True).add_(1e-12).div_(127.0)
        xq = torch.div(x, row_scale).round_().to(torch.int8)
        out = torch._int_mm(xq, self.weight_t) * (row_scale * self.scales)
        if self.bias is not None:
            out.add_(self.bias)
        return out


class BlockQuantLinear:
    """A GGUF matrix's Q4_0/Q4_1/Q8_0 blocks as stored; each activation row quantized to int8 per block of 32.

    The integer dot of every weight block with its activation block is rescaled by the two block
    scales, as llama.cpp computes; each row's result is independent of its batch-mates.
    """

    def __init__(self, blocks: QuantBlocks, bias: torch.Tensor | None, ops: BlockOps | None = None) -> None:
        """`ops`: the compiled kernel (kernels.block_linear), which keeps the blocks in its own tiled layout
        (the same bytes), or None for the torch reference on the rows as stored."""
        self.qtype = blocks.qtype
        self.shape = blocks.shape
        self.bias = None if bias is None else bias.float().contiguous()
        self._ops = ops
        self._tiles = None if ops is None else ops.tiles(blocks.data, blocks.qtype)
        self._blocks = blocks if ops is None else None

    @property
    def tiles(self) -> torch.Tensor | None:
        """The compiled kernel's tiled layout of the weight (None on the torch reference path)."""
        return self._tiles

    @property
    def blocks(self) -> QuantBlocks:
        """The weight's GGUF rows (rebuilt from the kernel's tiles when it holds them)."""
        if self._blocks is not None:
            return self._blocks
        return untile_blocks(self._tiles, self.qtype, self.shape[0])

    def rows(self, ids: torch.Tensor) -> QuantBlocks:
        """The GGUF rows `ids` [T] of the weight (a tied embedding's lookups)."""
        if self._tiles is not None:
            return tile_rows(self._tiles, self.qtype, ids)
        return QuantBlocks(self._blocks.data[ids], self.qtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._tiles is not None:
            return self._ops.linear(x, self._tiles, self.qtype, self.shape[0], self.bias)
        return block_linear_reference(x, self._blocks, self.bias)


Linear = FloatLinear | Int8DynamicLinear | BlockQuantLinear


def make_linear(
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    quantization: str,
    int8_ops: ModuleType | None = None,
    blocks: QuantBlocks | None = None,
    block_ops: BlockOps | None = None,
) -> Linear:
    """Build a linear layer in the requested format: "none", "int8" (computed by `int8_ops` if given) or
    "gguf" (the weight's GGUF `blocks`, computed by `block_ops` if given; int8 when it has none). `weight` may
    be None only for a "gguf" layer with blocks."""
    if quantization == "gguf" and blocks is not None:
        return BlockQuantLinear(blocks, bias, block_ops)
    if weight is None:
        raise ValueError(f"a {quantization!r} linear layer needs its float weight")
    if quantization in ("int8", "gguf"):
        return Int8DynamicLinear(weight, bias, int8_ops)
    return FloatLinear(weight, bias)


def float_weight(layer: Linear) -> torch.Tensor:
    """The layer's weight [N, K] as float32, whatever its format (int8 and GGUF blocks dequantized)."""
    if isinstance(layer, FloatLinear):
        return layer.weight.float()
    if isinstance(layer, Int8DynamicLinear):
        return layer.weight_t.t().float() * layer.scales[:, None]
    return dequantize_blocks(layer.blocks)
