"""Paged-attention decode in Triton: one query token per sequence, flash-decoding style.

One program handles one (sequence, KV head, split): the GROUP query heads that share the KV head
ride together as the rows of one small matmul, so each K/V row is read once per group, not once
per query head. Long contexts are cut into `num_splits` pieces along the sequence, each writing a
partial output and its log-sum-exp; a second kernel merges them. The cache layout is the torch
backend's: [num_slots, kv_heads, head_dim] per layer (int8 rows: head_dim + 2, see kv_quant.py),
slot = block * block_size + offset.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vivace.engine.attention.triton_common import dot_options
from vivace.engine.attention.triton_tile import attend_key_tile

BLOCK_N = 32  # keys per inner step (spans pages: each key finds its page through the block table)
MAX_SPLITS = 32


@triton.jit
def _decode_partial_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    tables_ptr,
    lens_ptr,
    part_out_ptr,
    part_lse_ptr,
    scale,
    split_len,
    window,
    stride_qt,
    stride_qh,
    stride_ks,
    stride_kh,
    stride_vs,
    stride_vh,
    stride_tb,
    stride_ob,
    stride_oh,
    stride_os,
    stride_lb,
    stride_lh,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DIM_PAD: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK: tl.constexpr,
    DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    INT8_KV: tl.constexpr,
):
    seq = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(lens_ptr + seq)
    first = tl.where(window > 0, tl.maximum(ctx - window, 0), 0)  # keys before the window are never read
    start = first + split * split_len
    end = tl.minimum(start + split_len, ctx)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, DIM_PAD)
    heads = kvh * GROUP + g
    gmask = g < GROUP
    dmask = d < HEAD_DIM
    q = tl.load(
        q_ptr + seq * stride_qt + heads[:, None] * stride_qh + d[None, :],
        mask=gmask[:, None] & dmask[None, :],
        other=0.0,
    ).to(DOT)
    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    denom = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, DIM_PAD], tl.float32)
    k_head, v_head, table_row = k_ptr + kvh * stride_kh, v_ptr + kvh * stride_vh, tables_ptr + seq * stride_tb
    for t0 in range(start, end, BLOCK):
        t = t0 + tl.arange(0, BLOCK)
        tmask = t < end
        # Every row sees every key and key t0 < end, as attend_key_tile needs.
        m, denom, acc = attend_key_tile(
            q,
            m,
            denom,
            acc,
            k_head,
            v_head,
            table_row,
            t,
            tmask,
            tmask[None, :],
            d,
            dmask,
            scale,
            stride_ks,
            stride_vs,
            PAGE,
            DOT,
            PRECISION,
            HEAD_DIM,
            INT8_KV,
        )
    nonempty = denom > 0.0
    out = acc / tl.where(nonempty, denom, 1.0)[:, None]
    lse = tl.where(nonempty, m + tl.log(tl.where(nonempty, denom, 1.0)), float("-inf"))
    out_base = part_out_ptr + seq * stride_ob + split * stride_os
    tl.store(out_base + heads[:, None] * stride_oh + d[None, :], out, mask=gmask[:, None] & dmask[None, :])
    tl.store(part_lse_ptr + seq * stride_lb + heads * stride_lh + split, lse, mask=gmask)


@triton.jit
def _decode_reduce_kernel(
    part_out_ptr,
    part_lse_ptr,
    out_ptr,
    num_splits,
    stride_ob,
    stride_oh,
    stride_os,
    stride_lb,
    stride_lh,
    stride_yt,
    stride_yh,
    HEAD_DIM: tl.constexpr,
    DIM_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, DIM_PAD)
    smask = s < num_splits
    lse = tl.load(part_lse_ptr + seq * stride_lb + head * stride_lh + s, mask=smask, other=float("-inf"))
    w = tl.exp(lse - tl.max(lse, 0))
    parts = tl.load(
        part_out_ptr + seq * stride_ob + head * stride_oh + s[:, None] * stride_os + d[None, :],
        mask=smask[:, None] & (d < HEAD_DIM)[None, :],
        other=0.0,
    )
    out = tl.sum(parts * w[:, None], 0) / tl.sum(w, 0)
    tl.store(out_ptr + seq * stride_yt + head * stride_yh + d, out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def num_decode_splits(max_context: int, num_seqs: int, num_kv_heads: int, num_sms: int = 132) -> int:
    """How many pieces to cut each context into: enough programs to fill the GPU, >= BLOCK_N keys each."""
    programs = max(1, num_seqs * num_kv_heads)
    wanted = -(-2 * num_sms // programs)  # about two waves of programs
    most_useful = max(1, -(-max_context // (4 * BLOCK_N)))  # don't split below 4 inner steps each
    return int(max(1, min(wanted, most_useful, MAX_SPLITS)))


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    block_size: int,
    scale: float,
    num_splits: int,
    max_context: int,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Attention of q [B, H, D] over each row's first context_lens[b] cached keys; returns [B, H, D].

    `max_context` bounds every context length (it sizes the splits; under a CUDA graph pass the
    engine's max_model_len so the launch does not depend on the step's lengths). `window`: each row
    attends only over its last `window` keys, which the splits then cover.
    """
    num_seqs, num_heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    if num_heads % kv_heads:
        raise ValueError(f"{num_heads} query heads do not split into {kv_heads} KV heads")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("paged_decode needs the head dimension contiguous in q and the caches")
    group = num_heads // kv_heads
    span = max_context if window is None else min(max_context, window)
    split_len = -(-max(1, -(-span // num_splits)) // BLOCK_N) * BLOCK_N
    out = torch.empty_like(q) if out is None else out
    part_out = torch.empty(num_seqs, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
    part_lse = torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=q.device)
    dim_pad = triton.next_power_of_2(head_dim)
    _decode_partial_kernel[(num_seqs, kv_heads, num_splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        part_out,
        part_lse,
        scale,
        split_len,
        window or 0,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        v_cache.stride(0),
        v_cache.stride(1),
        block_tables.stride(0),
        part_out.stride(0),
        part_out.stride(1),
        part_out.stride(2),
        part_lse.stride(0),
        part_lse.stride(1),
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        DIM_PAD=dim_pad,
        PAGE=block_size,
        BLOCK=BLOCK_N,
        INT8_KV=k_cache.dtype == torch.int8,
        **dot_options(q.dtype),
    )
    _decode_reduce_kernel[(num_seqs, num_heads)](
        part_out,
        part_lse,
        out,
        num_splits,
        part_out.stride(0),
        part_out.stride(1),
        part_out.stride(2),
        part_lse.stride(0),
        part_lse.stride(1),
        out.stride(0),
        out.stride(1),
        HEAD_DIM=head_dim,
        DIM_PAD=dim_pad,
        SPLITS_PAD=max(2, triton.next_power_of_2(num_splits)),
    )
    return out
