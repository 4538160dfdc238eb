"""Paged attention in plain PyTorch: the reference every other backend is checked against.

No compiled op runs on this path. New K/V of every token in the step are written first (cast to the
cache dtype, or quantized for an int8 cache: kv_quant.py), then decodes attend in one batched call
over their gathered, padded contexts, and each prefill chunk in one call over its context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from vivace.engine.attention.base import AttentionBackend
from vivace.engine.attention.kv_quant import from_cache, to_cache
from vivace.engine.device_io import upload

if TYPE_CHECKING:
    from vivace.engine.scheduler import ScheduledBatch


@dataclass
class PrefillSpan:
    """One prefill chunk: rows [start, start + num_tokens) of the step attend over `context_len` keys."""

    start: int
    num_tokens: int
    context_len: int
    slots: torch.Tensor | None  # [context_len] cache slots when part of the context was cached
    mask: torch.Tensor  # [num_tokens, context_len] bool, True = attend
    key_lag: torch.Tensor  # [num_tokens, context_len] query position - key position


@dataclass
class TorchAttentionMetadata:
    """Where each token's K/V goes and what each query attends to, for one step."""

    slot_mapping: torch.Tensor  # [T] slot of each token of the step
    num_decode_tokens: int = 0
    decode_slots: torch.Tensor | None = None  # [D, L] slots of each decode's context, padded
    decode_mask: torch.Tensor | None = None  # [D, 1, 1, L] bool, True = attend
    decode_key_lag: torch.Tensor | None = None  # [D, 1, 1, L] query position - key position
    prefills: list[PrefillSpan] = field(default_factory=list)
    # Masks of sliding-window layers, built by the first such layer of the step and reused by the rest.
    window_masks: dict[int, tuple[torch.Tensor | None, list[torch.Tensor]]] = field(default_factory=dict)

    def masks(self, window: int | None) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """The decode mask and each prefill span's mask, narrowed to keys less than `window` positions back."""
        if window is None:
            return self.decode_mask, [span.mask for span in self.prefills]
        if window not in self.window_masks:
            decode = None if self.decode_mask is None else self.decode_mask & (self.decode_key_lag < window)
            self.window_masks[window] = (decode, [span.mask & (span.key_lag < window) for span in self.prefills])
        return self.window_masks[window]


class TorchAttentionBackend(AttentionBackend):
    """The reference backend: torch ops only, any device and dtype."""

    name = "torch"
    supports_tree_attention = True

    def build_metadata(
        self, batch: ScheduledBatch, slot_mapping: torch.Tensor, group: int = 0
    ) -> TorchAttentionMetadata:
        """Padded decode gathers and one causal span per prefill chunk."""
        bs, dev = self.block_size, self.device
        decodes = batch.decodes
        meta = TorchAttentionMetadata(
            slot_mapping=upload(slot_mapping, torch.long, dev), num_decode_tokens=len(decodes)
        )
        if decodes:
            max_blocks = max(-(-(item.start + 1) // bs) for item in decodes)
            rows = [item.seq.table(group)[:max_blocks] for item in decodes]
            tables = torch.tensor([row + [0] * (max_blocks - len(row)) for row in rows], dtype=torch.long)
            offsets = torch.arange(bs, dtype=torch.long)
            decode_slots = (tables.unsqueeze(-1) * bs + offsets).view(len(decodes), max_blocks * bs)
            lengths = torch.tensor([item.start + 1 for item in decodes], dtype=torch.long)
            key_lag = (lengths.unsqueeze(1) - 1 - torch.arange(max_blocks * bs).unsqueeze(0)).view(
                len(decodes), 1, 1, max_blocks * bs
            )
            meta.decode_slots = upload(decode_slots, torch.long, dev)
            meta.decode_mask = upload(key_lag >= 0, torch.bool, dev)
            meta.decode_key_lag = upload(key_lag, torch.long, dev)
        row = len(decodes)
        for item in batch.prefills:
            start, end = item.start, item.start + item.num_tokens
            # An explicit mask even without a cached prefix: one attention kernel for both cases.
            key_lag = torch.arange(start, end).unsqueeze(1) - torch.arange(end).unsqueeze(0)
            mask = key_lag >= 0
            if item.tree is not None:  # a draft tree's nodes see the context, then only their ancestors
                n = len(item.draft)
                mask[-n:, -n:] = item.tree.ancestor_matrix()
            slots = None
            if start:
                table = torch.tensor(item.seq.table(group)[: -(-end // bs)], dtype=torch.long)
                slots = upload((table.unsqueeze(-1) * bs + torch.arange(bs)).view(-1)[:end], torch.long, dev)
            meta.prefills.append(
                PrefillSpan(
                    row,
                    item.num_tokens,
                    end,
                    slots,
                    upload(mask, torch.bool, dev),
                    upload(key_lag, torch.long, dev),
                )
            )
            row += item.num_tokens
        return meta

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: TorchAttentionMetadata,
        scale: float,
        window: int | None = None,
    ) -> torch.Tensor:
        """Attention for q [T, H, D] with new k, v [T, KVH, D]; writes k, v into the cache. Returns [T, H, D]."""
        k_stored, v_stored = to_cache(k, k_cache), to_cache(v, v_cache)
        k_cache.index_copy_(0, meta.slot_mapping, k_stored)
        v_cache.index_copy_(0, meta.slot_mapping, v_stored)
        if k_stored.dtype != k.dtype and meta.prefills:
            # Attend over the values as stored, so a prompt gives the same result whether its
            # prefix was computed now or reused from the cache.
            k, v = from_cache(k_stored, k.dtype), from_cache(v_stored, v.dtype)
        num_heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
        group = num_heads // kv_heads
        out = torch.empty_like(q)
        decode_mask, prefill_masks = meta.masks(window)
        num_decodes = meta.num_decode_tokens
        if num_decodes:
            # Queries that share a KV head ride together as a short "query length" of `group`.
            qd = q[:num_decodes].view(num_decodes, kv_heads, group, head_dim)
            kd = from_cache(k_cache[meta.decode_slots], q.dtype).transpose(1, 2)  # [D, KVH, L, D]
            vd = from_cache(v_cache[meta.decode_slots], q.dtype).transpose(1, 2)
            od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=decode_mask, scale=scale)
            out[:num_decodes] = od.reshape(num_decodes, num_heads, head_dim)
        for span, mask in zip(meta.prefills, prefill_masks, strict=True):
            rows = slice(span.start, span.start + span.num_tokens)
            qp = q[rows].transpose(0, 1)  # [H, n, D]
            if span.slots is None:
                kp, vp = k[rows].transpose(0, 1), v[rows].transpose(0, 1)
            else:
                kp = from_cache(k_cache[span.slots], q.dtype).transpose(0, 1)
                vp = from_cache(v_cache[span.slots], q.dtype).transpose(0, 1)
            op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, scale=scale, enable_gqa=group > 1)
            out[rows] = op.transpose(0, 1)
        return out
