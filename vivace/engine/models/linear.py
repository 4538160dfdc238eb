"""Linear layers in the engine's weight formats: plain float, or int8 weights for CPU decode speed."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FloatLinear:
    """y = x @ W.T + b in the weight's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.contiguous()
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8DynamicLinear:
    """Per-channel int8 weights, activations quantized per call (fbgemm), float32 in and out.

    Decode on CPU is bound by the bytes of weights read per step; int8 reads a quarter of float32.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        w = weight.float()
        scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
        zero_points = torch.zeros(w.shape[0], dtype=torch.long)
        qweight = torch.quantize_per_channel(w, scales, zero_points, axis=0, dtype=torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.float())
        self.out_features = w.shape[0]
        # The resolved overload skips the op packet's per-call dispatch checks (~10 us a call).
        self._op = torch.ops.quantized.linear_dynamic.default

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self._packed, False)


Linear = FloatLinear | Int8DynamicLinear


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, quantization: str) -> Linear:
    """Build a linear layer in the requested format ("none" or "int8")."""
    if quantization == "int8":
        return Int8DynamicLinear(weight, bias)
    return FloatLinear(weight, bias)
