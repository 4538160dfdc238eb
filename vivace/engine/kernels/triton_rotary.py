"""Rotary embedding of the query and key heads in one Triton pass (HF rotate_half layout).

Same tables and interface as models.rope.RotaryEmbedding (cos and signed sin indexed by position),
so the model calls it the same way; the torch version takes four elementwise kernels per layer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary_kernel(
    x_ptr,
    out_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    num_heads,
    stride_xt,
    stride_xh,
    stride_ot,
    stride_oh,
    stride_c,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    HEADS_PAD: tl.constexpr,
):
    tok = tl.program_id(0)
    pos = tl.load(pos_ptr + tok).to(tl.int64)
    i = tl.arange(0, HALF_PAD)
    h = tl.arange(0, HEADS_PAD)
    imask = i < HALF
    mask = (h < num_heads)[:, None] & imask[None, :]
    cos1 = tl.load(cos_ptr + pos * stride_c + i, mask=imask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_ptr + pos * stride_c + HALF + i, mask=imask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_ptr + pos * stride_c + i, mask=imask, other=0.0).to(tl.float32)  # = -sin
    sin2 = tl.load(sin_ptr + pos * stride_c + HALF + i, mask=imask, other=0.0).to(tl.float32)  # = +sin
    base = x_ptr + tok * stride_xt + h[:, None] * stride_xh + i[None, :]
    x1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    obase = out_ptr + tok * stride_ot + h[:, None] * stride_oh + i[None, :]
    ty = out_ptr.dtype.element_ty
    tl.store(obase, (x1 * cos1[None, :] + x2 * sin1[None, :]).to(ty), mask=mask)
    tl.store(obase + HALF, (x2 * cos2[None, :] + x1 * sin2[None, :]).to(ty), mask=mask)


class TritonRotary:
    """Rotary embedding on the device: tables() returns positions, apply() runs the kernel."""

    def __init__(self, cos: torch.Tensor, signed_sin: torch.Tensor) -> None:
        if cos.shape != signed_sin.shape or cos.shape[-1] % 2:
            raise ValueError(f"cos {tuple(cos.shape)} and sin {tuple(signed_sin.shape)} tables must match, even width")
        self.cos = cos.contiguous()
        self.signed_sin = signed_sin.contiguous()

    def tables(self, positions: torch.Tensor) -> torch.Tensor:
        """The kernel indexes the tables itself: its 'tables' are the positions."""
        return positions

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x [T, heads, head_dim] (head dim contiguous) at `positions` [T]; returns a new tensor."""
        num_tokens, num_heads, head_dim = x.shape
        if head_dim != self.cos.shape[-1] or x.stride(-1) != 1:
            raise ValueError(f"x of shape {tuple(x.shape)} needs head_dim {self.cos.shape[-1]}, contiguous")
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        if num_tokens == 0:
            return out
        half = head_dim // 2
        _rotary_kernel[(num_tokens,)](
            x,
            out,
            self.cos,
            self.signed_sin,
            positions,
            num_heads,
            x.stride(0),
            x.stride(1),
            out.stride(0),
            out.stride(1),
            self.cos.stride(0),
            HALF=half,
            HALF_PAD=triton.next_power_of_2(half),
            HEADS_PAD=triton.next_power_of_2(num_heads),
        )
        return out
