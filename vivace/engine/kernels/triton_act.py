"""The gated activations of the MLP (SwiGLU's silu(gate) * up, GeGLU's gelu_tanh(gate) * up) in one
Triton pass over rows laid out [gate | up]: torch takes two elementwise kernels (the activation, then
the product), and at a decode step's sizes each kernel costs about its launch latency."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024
_GELU_C = 0.7978845608028654  # sqrt(2 / pi)


@triton.jit
def _gated_act_kernel(x_ptr, out_ptr, width, stride_x, stride_o, BLOCK: tl.constexpr, GELU: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = col < width
    ty = out_ptr.dtype.element_ty
    gate = tl.load(x_ptr + row * stride_x + col, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + width + col, mask=mask, other=0.0).to(tl.float32)
    if GELU:  # 0.5 g (1 + tanh(z)) = g * sigmoid(2z)
        z = _GELU_C * (gate + 0.044715 * gate * gate * gate)
        act = gate / (1.0 + tl.exp(-2.0 * z))
    else:
        act = gate / (1.0 + tl.exp(-gate))
    # the activation rounds to the activations' dtype before the product, as torch's two kernels do
    tl.store(out_ptr + row * stride_o + col, (act.to(ty).to(tl.float32) * up).to(ty), mask=mask)


def _gated(gate_up: torch.Tensor, gelu: bool) -> torch.Tensor:
    if gate_up.dim() != 2 or gate_up.shape[1] % 2 or gate_up.stride(-1) != 1:
        raise ValueError(f"expected [rows, 2 * intermediate] with contiguous rows, got shape {tuple(gate_up.shape)}")
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((rows, width), dtype=gate_up.dtype, device=gate_up.device)
    if rows and width:
        grid = (rows, triton.cdiv(width, BLOCK))
        _gated_act_kernel[grid](gate_up, out, width, gate_up.stride(0), out.stride(0), BLOCK=BLOCK, GELU=gelu)
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up over rows laid out [gate | up]; same contract as torch_ops.silu_mul."""
    return _gated(gate_up, gelu=False)


def gelu_tanh_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gelu(gate, tanh approximation) * up over rows laid out [gate | up]; same contract as torch_ops.gelu_tanh_mul."""
    return _gated(gate_up, gelu=True)
