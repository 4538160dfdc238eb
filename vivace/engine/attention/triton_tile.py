"""The inner step the paged-attention kernels share: attend one tile of keys, online softmax.

Device code only (a @triton.jit helper the decode and prefill kernels call in their key loops);
host-side helpers live in triton_common.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _row_scales(head_ptr, slot, stride_s, tmask, HEAD_DIM: tl.constexpr):
    """The float16 scales stored after the HEAD_DIM int8 values of the rows at `slot`, as float32."""
    ptrs = (head_ptr + slot * stride_s + HEAD_DIM).to(tl.pointer_type(tl.float16), bitcast=True)
    return tl.load(ptrs, mask=tmask, other=0.0).to(tl.float32)


@triton.jit
def attend_key_tile(
    q,
    m,
    denom,
    acc,
    k_head_ptr,
    v_head_ptr,
    table_row_ptr,
    t,
    tmask,
    smask,
    d,
    dmask,
    scale,
    stride_ks,
    stride_vs,
    PAGE: tl.constexpr,
    DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    INT8_KV: tl.constexpr,
):
    """Fold keys at positions t (where tmask) into the running (m, denom, acc) of the query rows q.

    Each key finds its page through the sequence's block-table row; the K/V pointers are already
    offset to the KV head. smask [rows, keys] says which scores count (at least tmask[None, :]; the
    prefill kernel adds its causal mask). Every row must keep a key in its first tile, so m is
    finite from the first step on (else exp(-inf - -inf) would be NaN). Returns (m, denom, acc).
    INT8_KV: cache rows are HEAD_DIM int8 values then their float16 scale (attention/kv_quant.py).
    """
    page = tl.load(table_row_ptr + t // PAGE, mask=tmask, other=0)
    slot = page.to(tl.int64) * PAGE + t % PAGE
    kv_mask = tmask[:, None] & dmask[None, :]
    k = tl.load(k_head_ptr + slot[:, None] * stride_ks + d[None, :], mask=kv_mask, other=0.0)
    if INT8_KV:
        k = k.to(tl.float32) * _row_scales(k_head_ptr, slot, stride_ks, tmask, HEAD_DIM)[:, None]
    s = tl.dot(q, tl.trans(k.to(DOT)), input_precision=PRECISION) * scale
    s = tl.where(smask, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    p = tl.exp(s - m_new[:, None])
    alpha = tl.exp(m - m_new)
    denom = denom * alpha + tl.sum(p, 1)
    v = tl.load(v_head_ptr + slot[:, None] * stride_vs + d[None, :], mask=kv_mask, other=0.0)
    if INT8_KV:
        v = v.to(tl.float32) * _row_scales(v_head_ptr, slot, stride_vs, tmask, HEAD_DIM)[:, None]
    acc = acc * alpha[:, None] + tl.dot(p.to(DOT), v.to(DOT), input_precision=PRECISION)
    return m_new, denom, acc
