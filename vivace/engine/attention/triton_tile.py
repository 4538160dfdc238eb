"""The inner step the paged-attention kernels share: attend one tile of keys, online softmax.

Device code only (a @triton.jit helper the decode and prefill kernels call in their key loops);
host-side helpers live in triton_common.
"""

from __future__ import annotations

import triton
import triton.language as tl


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
):
    """Fold keys at positions t (where tmask) into the running (m, denom, acc) of the query rows q.

    Each key finds its page through the sequence's block-table row; the K/V pointers are already
    offset to the KV head. smask [rows, keys] says which scores count (at least tmask[None, :]; the
    prefill kernel adds its causal mask). Every row must keep a key in its first tile, so m is
    finite from the first step on (else exp(-inf - -inf) would be NaN). Returns (m, denom, acc).
    """
    page = tl.load(table_row_ptr + t // PAGE, mask=tmask, other=0)
    slot = page.to(tl.int64) * PAGE + t % PAGE
    kv_mask = tmask[:, None] & dmask[None, :]
    k = tl.load(k_head_ptr + slot[:, None] * stride_ks + d[None, :], mask=kv_mask, other=0.0)
    s = tl.dot(q, tl.trans(k.to(DOT)), input_precision=PRECISION) * scale
    s = tl.where(smask, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    p = tl.exp(s - m_new[:, None])
    alpha = tl.exp(m - m_new)
    denom = denom * alpha + tl.sum(p, 1)
    v = tl.load(v_head_ptr + slot[:, None] * stride_vs + d[None, :], mask=kv_mask, other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(DOT), v.to(DOT), input_precision=PRECISION)
    return m_new, denom, acc
