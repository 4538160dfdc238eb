"""RMSNorm in Triton, plain and fused with the residual add that precedes it in every layer."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    res_out_ptr,
    eps,
    stride_x,
    stride_r,
    stride_o,
    stride_ro,
    N: tl.constexpr,
    N_PAD: tl.constexpr,
    ADD: tl.constexpr,
):
    row = tl.program_id(0)
    c = tl.arange(0, N_PAD)
    mask = c < N
    x = tl.load(x_ptr + row * stride_x + c, mask=mask, other=0.0).to(tl.float32)
    if ADD:
        x += tl.load(res_ptr + row * stride_r + c, mask=mask, other=0.0).to(tl.float32)
        x = x.to(res_out_ptr.dtype.element_ty)  # the residual stream keeps the activations' dtype
        tl.store(res_out_ptr + row * stride_ro + c, x, mask=mask)
        x = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / N + eps)
    w = tl.load(w_ptr + c, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + c, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"expected a [rows, hidden] tensor with contiguous rows, got shape {tuple(x.shape)}")
    if weight.shape != (x.shape[1],):
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not match hidden size {x.shape[1]}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x [rows, hidden] (float32 statistics), in x's dtype; same contract as F.rms_norm."""
    _check(x, weight)
    out = torch.empty_like(x)
    n = x.shape[1]
    _rms_norm_kernel[(x.shape[0],)](
        x,
        x,
        weight,
        out,
        out,
        eps,
        x.stride(0),
        x.stride(0),
        out.stride(0),
        out.stride(0),
        N=n,
        N_PAD=triton.next_power_of_2(n),
        ADD=False,
    )
    return out


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(residual + x), residual + x) in one pass over the rows."""
    _check(x, weight)
    if residual.shape != x.shape or residual.stride(-1) != 1:
        raise ValueError(f"residual of shape {tuple(residual.shape)} does not match x {tuple(x.shape)}")
    out = torch.empty_like(x)
    summed = torch.empty_like(x)
    n = x.shape[1]
    _rms_norm_kernel[(x.shape[0],)](
        x,
        residual,
        weight,
        out,
        summed,
        eps,
        x.stride(0),
        residual.stride(0),
        out.stride(0),
        summed.stride(0),
        N=n,
        N_PAD=triton.next_power_of_2(n),
        ADD=True,
    )
    return out, summed
