"""Rotary embedding of the query and key heads in one Triton pass (HF rotate_half layout).

Same tables and interface as models.rope.RotaryEmbedding (cos and signed sin indexed by position),
so the model calls it the same way; the torch version takes four elementwise kernels per layer.
`apply_and_store` also writes the rotated keys and the values into the paged KV cache in the same
pass: one kernel per layer where rotary and the cache write took three (a decode step's layer is a
handful of microsecond-long kernels, and each one costs its launch latency).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tables_at(cos_ptr, sin_ptr, pos, stride_c, i, imask, HALF: tl.constexpr):
    """cos and signed sin (float32) at position `pos`, each as its two halves."""
    cos1 = tl.load(cos_ptr + pos * stride_c + i, mask=imask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_ptr + pos * stride_c + HALF + i, mask=imask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_ptr + pos * stride_c + i, mask=imask, other=0.0).to(tl.float32)  # = -sin
    sin2 = tl.load(sin_ptr + pos * stride_c + HALF + i, mask=imask, other=0.0).to(tl.float32)  # = +sin
    return cos1, cos2, sin1, sin2


@triton.jit
def _rotated_halves(x_ptr, cos1, cos2, sin1, sin2, h, i, mask, stride_xh, HALF: tl.constexpr):
    """The two rotated halves (float32) of heads `h` of the head-major rows at x_ptr."""
    base = x_ptr + h[:, None] * stride_xh + i[None, :]
    x1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    return x1 * cos1[None, :] + x2 * sin1[None, :], x2 * cos2[None, :] + x1 * sin2[None, :]


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
    cos1, cos2, sin1, sin2 = _tables_at(cos_ptr, sin_ptr, pos, stride_c, i, imask, HALF)
    r1, r2 = _rotated_halves(x_ptr + tok * stride_xt, cos1, cos2, sin1, sin2, h, i, mask, stride_xh, HALF)
    obase = out_ptr + tok * stride_ot + h[:, None] * stride_oh + i[None, :]
    ty = out_ptr.dtype.element_ty
    tl.store(obase, r1.to(ty), mask=mask)
    tl.store(obase + HALF, r2.to(ty), mask=mask)


@triton.jit
def _rotary_store_kernel(
    qk_ptr,
    v_ptr,
    q_out_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    num_heads,
    num_kv_heads,
    stride_qkt,
    stride_qkh,
    stride_vt,
    stride_vh,
    stride_qot,
    stride_qoh,
    stride_cs,
    stride_ch,
    stride_c,
    HEAD_DIM: tl.constexpr,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    DIM_PAD: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    KV_HEADS_PAD: tl.constexpr,
):
    tok = tl.program_id(0)
    pos = tl.load(pos_ptr + tok).to(tl.int64)
    slot = tl.load(slot_ptr + tok).to(tl.int64)
    i = tl.arange(0, HALF_PAD)
    imask = i < HALF
    cos1, cos2, sin1, sin2 = _tables_at(cos_ptr, sin_ptr, pos, stride_c, i, imask, HALF)
    row = qk_ptr + tok * stride_qkt
    mid = q_out_ptr.dtype.element_ty  # keys round to the activations' dtype first, as apply + index_copy_ do
    h = tl.arange(0, HEADS_PAD)
    q_mask = (h < num_heads)[:, None] & imask[None, :]
    q1, q2 = _rotated_halves(row, cos1, cos2, sin1, sin2, h, i, q_mask, stride_qkh, HALF)
    q_base = q_out_ptr + tok * stride_qot + h[:, None] * stride_qoh + i[None, :]
    tl.store(q_base, q1.to(mid), mask=q_mask)
    tl.store(q_base + HALF, q2.to(mid), mask=q_mask)
    g = tl.arange(0, KV_HEADS_PAD)
    k_mask = (g < num_kv_heads)[:, None] & imask[None, :]
    k1, k2 = _rotated_halves(row + num_heads * stride_qkh, cos1, cos2, sin1, sin2, g, i, k_mask, stride_qkh, HALF)
    k_base = k_cache_ptr + slot * stride_cs + g[:, None] * stride_ch + i[None, :]
    cache_ty = k_cache_ptr.dtype.element_ty
    tl.store(k_base, k1.to(mid).to(cache_ty), mask=k_mask)
    tl.store(k_base + HALF, k2.to(mid).to(cache_ty), mask=k_mask)
    d = tl.arange(0, DIM_PAD)
    v_mask = (g < num_kv_heads)[:, None] & (d < HEAD_DIM)[None, :]
    v = tl.load(v_ptr + tok * stride_vt + g[:, None] * stride_vh + d[None, :], mask=v_mask, other=0.0)
    tl.store(v_cache_ptr + slot * stride_cs + g[:, None] * stride_ch + d[None, :],
             v.to(v_cache_ptr.dtype.element_ty), mask=v_mask)  # fmt: skip


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

    def apply_and_store(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> torch.Tensor:
        """Rotate the query and key heads of qk [T, H + KVH, D] at `positions`, write the rotated keys and
        v [T, KVH, D] to the float caches [slots, KVH, D] at `slot_mapping` [T]; returns the rotated queries
        [T, H, D]. Bitwise what apply, then index_copy_ of k and v into the caches, store."""
        num_tokens, num_heads_all, head_dim = qk.shape
        num_kv_heads = v.shape[1]
        num_heads = num_heads_all - num_kv_heads
        if head_dim != self.cos.shape[-1] or qk.stride(-1) != 1 or v.stride(-1) != 1 or v.shape[2] != head_dim:
            raise ValueError(
                f"qk {tuple(qk.shape)} and v {tuple(v.shape)} need head_dim {self.cos.shape[-1]}, contiguous"
            )
        if k_cache.dtype == torch.int8 or k_cache.stride() != v_cache.stride() or k_cache.stride(-1) != 1:
            raise ValueError(
                "apply_and_store writes float caches of one layout; int8 caches take apply, then the backend"
            )
        q = torch.empty((num_tokens, num_heads, head_dim), dtype=qk.dtype, device=qk.device)
        if num_tokens == 0:
            return q
        half = head_dim // 2
        _rotary_store_kernel[(num_tokens,)](
            qk,
            v,
            q,
            k_cache,
            v_cache,
            slot_mapping,
            self.cos,
            self.signed_sin,
            positions,
            num_heads,
            num_kv_heads,
            qk.stride(0),
            qk.stride(1),
            v.stride(0),
            v.stride(1),
            q.stride(0),
            q.stride(1),
            k_cache.stride(0),
            k_cache.stride(1),
            self.cos.stride(0),
            HEAD_DIM=head_dim,
            HALF=half,
            HALF_PAD=triton.next_power_of_2(half),
            DIM_PAD=triton.next_power_of_2(head_dim),
            HEADS_PAD=triton.next_power_of_2(num_heads),
            KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        )
        return q
