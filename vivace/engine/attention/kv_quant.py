"""The INT8 KV cache layout, and its reference quantize / dequantize in torch.

An int8 cache row holds one token's one KV head: `head_dim` int8 values, then their float16 scale in
the last 2 bytes (`[slots, kv_heads, head_dim + 2]` int8: 66 bytes for 64 values, 0.516 of bfloat16's
128; a float32 scale made it 0.531). The scale is rounded to float16 before the values are divided by
it, so they are quantized against the scale that is stored. The scale is per token and head,
symmetric (absmax / 127), so a row is final when its token is written: a per-block scale would have
to be fixed before the block's later tokens exist (or re-quantize the block as it fills), and one
scale per token keeps outliers in one token from costing precision in its neighbours. Keeping the
scale inside the row means every backend addresses int8 and float caches with the same slot index
and the K/V write stays one scatter. The C++ and Triton kernels implement the same arithmetic.

Keys are stored rotated: the model multiplies its queries and keys (after rotary) by one fixed
orthonormal matrix R per head size before the K/V write and the attention (`key_rotation`), so
scores are unchanged, (qR)(kR)^T = qk^T, but a few large key channels, which would otherwise set
each row's absmax and leave the rest few int8 levels (KIVI's finding), are spread over all channels.
This is QuaRot's online Hadamard for the KV cache: fixed, so it needs no calibration and a cached
block means the same thing in every sequence (prefix cache, session tier); it costs one small
matmul per layer. Values are stored as they are: their error averages over the attended keys, and
rotating them too measured no better.

In a layer with QK-norm (Gemma 3, Qwen3) the norms' weights make some channels of the queries large
where the keys' are small, and the other way round. A key's int8 error is spread evenly over its
channels by the rotation, so a score's error grows with the query's size in every channel. Such a
layer also moves size from the queries to the keys per channel before rotating (`key_channel_scale`,
SmoothQuant's migration applied to attention): keys are stored as (k * a) R and queries attend as
(q / a) R, so scores are still unchanged, with a_c = sqrt(g_q / g_k) from the two norms' weights. It
is fixed by the weights, as the rotation is; a scale fitted to the queries and keys of 4,096 tokens
of text measured no better.
"""

from __future__ import annotations

import functools

import torch

SCALE_BYTES = 2  # one float16 per row
# What an int8 key row means beyond its bytes; part of the session tier's fingerprint, so a file written
# under another key transform is not read back as this one.
KEY_TRANSFORM = "rotated (Hadamard or seeded orthogonal); QK-norm layers: channel-scaled first"
INT8_MAX = 127.0
SCALE_MAX = torch.finfo(torch.float16).max  # 65504, the largest scale a row can store


def cache_row_width(head_dim: int, kv_dtype: torch.dtype) -> int:
    """Elements of one cache row (token x KV head) in `kv_dtype`."""
    return head_dim + SCALE_BYTES if kv_dtype == torch.int8 else head_dim


def cache_row_bytes(head_dim: int, kv_dtype: torch.dtype) -> int:
    """Bytes of one cache row (token x KV head)."""
    if kv_dtype == torch.int8:
        return head_dim + SCALE_BYTES
    return head_dim * torch.finfo(kv_dtype).bits // 8


def quantize_rows(x: torch.Tensor) -> torch.Tensor:
    """[..., head_dim] float -> [..., head_dim + 2] int8 rows (values, then the float16 scale).

    scale = float16(min(absmax / 127, 65504)), 1 where that is 0 (an all-zero row, or one too small for
    float16, stays zero); values = round(x / scale) clamped to [-127, 127].
    """
    x = x.float()
    scale = (x.abs().amax(dim=-1, keepdim=True) / INT8_MAX).clamp_(max=SCALE_MAX).to(torch.float16)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.round(x / scale.float()).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return torch.cat([values, scale.contiguous().view(torch.int8)], dim=-1)


def dequantize_rows(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[..., head_dim + 2] int8 rows -> [..., head_dim] values in `dtype`."""
    scale = rows[..., -SCALE_BYTES:].contiguous().view(torch.float16).float()
    return (rows[..., :-SCALE_BYTES].float() * scale).to(dtype)


def to_cache(x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """New K or V rows [T, KVH, D] in the cache's storage form."""
    return quantize_rows(x) if cache.dtype == torch.int8 else x.to(cache.dtype)


def from_cache(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cache rows back as [..., D] values in `dtype`."""
    return dequantize_rows(rows, dtype) if rows.dtype == torch.int8 else rows.to(dtype)


@functools.lru_cache(maxsize=8)
def key_rotation(head_dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal [head_dim, head_dim] matrix int8 caches store keys (and attend queries) through.

    A normalized Sylvester Hadamard matrix when head_dim is a power of two (every channel of the
    input spreads evenly over every output channel); otherwise a fixed seeded random orthogonal one.
    """
    if head_dim & (head_dim - 1) == 0:
        rot = torch.ones(1, 1, dtype=torch.float64)
        while rot.shape[0] < head_dim:
            rot = torch.cat([torch.cat([rot, rot], 1), torch.cat([rot, -rot], 1)], 0)
        rot = rot / head_dim**0.5
    else:
        gaussian = torch.randn(head_dim, head_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        rot, _ = torch.linalg.qr(gaussian)
    return rot.to(device=device, dtype=dtype)


def key_channel_scale(q_norm: torch.Tensor, k_norm: torch.Tensor) -> torch.Tensor:
    """The per-channel a [head_dim] (float32) of a QK-norm layer's int8 keys: k * a is stored, q / a attends.

    a_c = sqrt(g_q / g_k), g the norm weight's root mean square over channel c's rotary pair (c and
    c + head_dim / 2, which rotary mixes: after it, a channel's size is its pair's); 1 where either is 0
    (the channel is then 0 in the queries or the keys, and any a leaves the scores as they are).
    """

    def pair_rms(weight: torch.Tensor) -> torch.Tensor:
        w = weight.float()
        half = w.shape[0] // 2
        return ((w[:half] ** 2 + w[half:] ** 2) / 2).sqrt().repeat(2)

    g_q, g_k = pair_rms(q_norm), pair_rms(k_norm)
    usable = (g_q > 0) & (g_k > 0)
    ratio = torch.where(usable, g_q / torch.where(usable, g_k, 1.0), torch.ones_like(g_q))
    return ratio.sqrt()
