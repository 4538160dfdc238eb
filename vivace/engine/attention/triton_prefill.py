"""Variable-length causal prefill attention in Triton, reading every key from the paged KV cache.

Each sequence contributes a chunk of query rows (its new tokens, at positions start..start+n-1)
packed back to back in one [T, H, D] tensor; cu_query[b] is where sequence b's rows begin. The
chunk's K/V are written to the cache before this runs, so a cached prefix, earlier chunks and the
chunk itself are all read the same way (as stored: prefix reuse cannot change results). One
program computes BLOCK_M query rows of one head with an online softmax over key tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vivace.engine.attention.triton_common import dot_options
from vivace.engine.attention.triton_tile import attend_key_tile

BLOCK_M = 32
BLOCK_N = 32  # >= BLOCK_M: under a sliding window every row of a tile keeps a key in its first key tile


@triton.jit
def _prefill_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    tables_ptr,
    cu_query_ptr,
    starts_ptr,
    tree_ptr,
    scale,
    window,
    stride_qt,
    stride_qh,
    stride_ks,
    stride_kh,
    stride_vs,
    stride_vh,
    stride_ot,
    stride_oh,
    stride_tb,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DIM_PAD: tl.constexpr,
    PAGE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    INT8_KV: tl.constexpr,
    HAS_TREE: tl.constexpr,
):
    tile = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    kvh = head // GROUP
    row0 = tl.load(cu_query_ptr + seq)
    num_rows = tl.load(cu_query_ptr + seq + 1) - row0
    if tile * BM >= num_rows:
        return
    first_pos = tl.load(starts_ptr + seq)
    r = tile * BM + tl.arange(0, BM)
    rmask = r < num_rows
    d = tl.arange(0, DIM_PAD)
    dmask = d < HEAD_DIM
    q = tl.load(
        q_ptr + (row0 + r)[:, None] * stride_qt + head * stride_qh + d[None, :],
        mask=rmask[:, None] & dmask[None, :],
        other=0.0,
    ).to(DOT)
    q_pos = first_pos + r
    if HAS_TREE:  # draft-tree rows: (first node's position, bitmask of the nodes each row sees)
        tree_base = tl.load(tree_ptr + (row0 + r) * 2, mask=rmask, other=1 << 62)
        tree_bits = tl.load(tree_ptr + (row0 + r) * 2 + 1, mask=rmask, other=0)
    key_end = first_pos + tl.minimum((tile + 1) * BM, num_rows)  # last row's position + 1
    # Under a sliding window the tile's first row sees keys from its position - window + 1 on.
    key_start = tl.where(window > 0, tl.maximum(first_pos + tile * BM - window + 1, 0), 0)
    m = tl.full([BM], float("-inf"), tl.float32)
    denom = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, DIM_PAD], tl.float32)
    k_head, v_head, table_row = k_ptr + kvh * stride_kh, v_ptr + kvh * stride_vh, tables_ptr + seq * stride_tb
    for t0 in range(key_start, key_end, BN):
        t = t0 + tl.arange(0, BN)
        tmask = t < key_end
        causal = t[None, :] <= q_pos[:, None]
        # Rows past the chunk's end (never stored) see every key, so none of them is all -inf.
        visible = tl.where(window > 0, causal & (t[None, :] > q_pos[:, None] - window), causal)
        if HAS_TREE:  # past a tree's first node, only the row's own ancestors and itself
            node = tl.minimum(tl.maximum(t[None, :].to(tl.int64) - tree_base[:, None], 0), 63)
            in_path = ((tree_bits[:, None] >> node) & 1) != 0
            visible = visible & ((t[None, :] < tree_base[:, None]) | in_path)
        visible = visible | ~rmask[:, None]
        # Row i's first visible key is key_start + i (or 0): in its first tile, as attend_key_tile needs.
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
            visible & tmask[None, :],
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
    out = acc / denom[:, None]
    tl.store(
        out_ptr + (row0 + r)[:, None] * stride_ot + head * stride_oh + d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=rmask[:, None] & dmask[None, :],
    )


def paged_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_query: torch.Tensor,
    starts: torch.Tensor,
    max_query_len: int,
    block_size: int,
    scale: float,
    out: torch.Tensor | None = None,
    window: int | None = None,
    tree: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of packed query rows q [T, H, D] over the paged cache; returns [T, H, D].

    Sequence b owns rows cu_query[b]:cu_query[b+1] at positions starts[b].., and its keys are
    positions 0..(its last row's position) found through block_tables[b]; with a `window`, a row at
    position p sees only keys (p - window, p]. `tree` [T, 2] int64 (attention/base.py's tree_rows): a row
    sees keys from its tree's first node on only where its bitmask has them.
    """
    num_rows, num_heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    if num_heads % kv_heads:
        raise ValueError(f"{num_heads} query heads do not split into {kv_heads} KV heads")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("paged_prefill needs the head dimension contiguous in q and the caches")
    num_seqs = block_tables.shape[0]
    if cu_query.numel() != num_seqs + 1 or starts.numel() != num_seqs:
        raise ValueError(
            f"{num_seqs} block-table rows need {num_seqs + 1} query offsets and {num_seqs} starts, "
            f"got {cu_query.numel()} and {starts.numel()}"
        )
    out = torch.empty_like(q) if out is None else out
    if num_rows == 0:
        return out
    grid = (triton.cdiv(max_query_len, BLOCK_M), num_seqs, num_heads)
    _prefill_kernel[grid](
        q,
        k_cache,
        v_cache,
        out,
        block_tables,
        cu_query,
        starts,
        starts if tree is None else tree,
        scale,
        window or 0,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        v_cache.stride(0),
        v_cache.stride(1),
        out.stride(0),
        out.stride(1),
        block_tables.stride(0),
        GROUP=num_heads // kv_heads,
        HEAD_DIM=head_dim,
        DIM_PAD=triton.next_power_of_2(head_dim),
        PAGE=block_size,
        BM=BLOCK_M,
        BN=BLOCK_N,
        INT8_KV=k_cache.dtype == torch.int8,
        HAS_TREE=tree is not None,
        **dot_options(q.dtype),
    )
    return out
