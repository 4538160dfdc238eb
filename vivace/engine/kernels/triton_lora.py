"""Multi-LoRA in Triton for a batch mixing adapters, gathered per row (punica's BGMV): each token adds
only its own adapter's low-rank product.

Two kernels over LoRALinear's slot-stacked matrices (lora/layers.py): `shrink` computes
h[t, p] = A[slot_t, p] @ x[t] for every part p (q/k/v, gate/up, or one), and `expand` adds
h[t, p] @ B[slot_t, p] into part p's output columns. Tokens without an adapter (slot -1) do nothing.
The padded rank is computed whole: a lower-rank adapter's extra rows are zeros, which on a GPU costs
less than a per-slot branch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, h_ptr, slots_ptr, K, stride_x, stride_a, stride_h,
    P: tl.constexpr, R: tl.constexpr, R_PAD: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    p = tl.program_id(1)
    slot = tl.load(slots_ptr + t)
    if slot >= 0:
        r = tl.arange(0, R_PAD)
        rows = (slot * P + p) * R + r
        acc = tl.zeros((R_PAD,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + t * stride_x + k, mask=k < K, other=0.0).to(tl.float32)
            a = tl.load(
                a_ptr + rows[:, None] * stride_a + k[None, :], mask=(r[:, None] < R) & (k[None, :] < K), other=0.0
            ).to(tl.float32)
            acc += tl.sum(a * x[None, :], 1)
        tl.store(h_ptr + t * stride_h + p * R + r, acc, mask=r < R)


@triton.jit
def _expand_kernel(
    y_ptr, h_ptr, b_ptr, slots_ptr, lo, hi, stride_y, stride_h, stride_b,
    part, P: tl.constexpr, R: tl.constexpr, R_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    slot = tl.load(slots_ptr + t)
    if slot >= 0:
        r = tl.arange(0, R_PAD)
        n = lo + tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        h = tl.load(h_ptr + t * stride_h + part * R + r, mask=r < R, other=0.0)
        rows = (slot * P + part) * R + r
        b = tl.load(b_ptr + rows[:, None] * stride_b + n[None, :], mask=(r[:, None] < R) & (n[None, :] < hi), other=0.0)
        y = tl.load(y_ptr + t * stride_y + n, mask=n < hi, other=0.0).to(tl.float32)
        y += tl.sum(h[:, None] * b.to(tl.float32), 0)
        tl.store(y_ptr + t * stride_y + n, y.to(y_ptr.dtype.element_ty), mask=n < hi)


def lora_add(
    y: torch.Tensor,
    x: torch.Tensor,
    slots: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    ranks: torch.Tensor,
    bounds: list[int],
    max_rank: int,
) -> None:
    """y [T, N] += each token's own adapter product (slot -1: none), in place; the CPU op's contract
    (cpu_ops/csrc/lora.cpp). `ranks` is unused: padded rows are zeros."""
    tokens, k = x.shape
    parts = len(bounds) - 1
    if y.stride(-1) != 1 or x.stride(-1) != 1 or y.shape[0] != tokens or slots.shape[0] != tokens:
        raise ValueError(f"x {tuple(x.shape)}, y {tuple(y.shape)} and slots {tuple(slots.shape)} must agree")
    if tokens == 0:
        return
    h = torch.empty(tokens, parts * max_rank, dtype=torch.float32, device=x.device)
    r_pad = max(triton.next_power_of_2(max_rank), 2)
    _shrink_kernel[(tokens, parts)](
        x, a, h, slots, k, x.stride(0), a.stride(0), h.stride(0), P=parts, R=max_rank, R_PAD=r_pad, BLOCK_K=128
    )
    block_n = 128
    for part in range(parts):
        lo, hi = bounds[part], bounds[part + 1]
        _expand_kernel[(tokens, triton.cdiv(hi - lo, block_n))](
            y, h, b, slots, lo, hi, y.stride(0), h.stride(0), b.stride(0), part,
            P=parts, R=max_rank, R_PAD=r_pad, BLOCK_N=block_n,
        )  # fmt: skip
