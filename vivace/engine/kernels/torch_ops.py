"""The layer ops in plain torch: the reference path, and the references the compiled ops are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's silu(gate) * up over rows laid out [gate | up]."""
    intermediate = gate_up.shape[-1] // 2
    return F.silu(gate_up[:, :intermediate]) * gate_up[:, intermediate:]


def gelu_tanh_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """GeGLU's gelu(gate) * up (tanh approximation, as Gemma) over rows laid out [gate | up]."""
    intermediate = gate_up.shape[-1] // 2
    return F.gelu(gate_up[:, :intermediate], approximate="tanh") * gate_up[:, intermediate:]


def argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """First index of each row's largest value."""
    return x.argmax(dim=-1)
