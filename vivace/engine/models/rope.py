"""Rotary position embeddings (HF rotate_half layout), with the llama3 frequency scaling variant."""

from __future__ import annotations

import math
from typing import Any

import torch


def inverse_frequencies(head_dim: int, theta: float, rope_scaling: dict[str, Any] | None) -> torch.Tensor:
    """Per-pair inverse frequencies, adjusted for llama3-style or linear scaling when configured."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if not rope_scaling:
        return inv_freq
    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind == "llama3":
        factor = float(rope_scaling["factor"])
        low = float(rope_scaling.get("low_freq_factor", 1.0))
        high = float(rope_scaling.get("high_freq_factor", 4.0))
        original = float(rope_scaling.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = original / low, original / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(is_medium, smoothed, scaled)
    if kind == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if kind == "freq_factors":
        # llama.cpp stores llama3 scaling as per-pair divisors (the rope_freqs tensor).
        return inv_freq / torch.as_tensor(rope_scaling["factors"], dtype=torch.float64)
    if kind == "default":
        return inv_freq
    raise ValueError(f"unsupported rope scaling type {kind!r}; supported: llama3, linear, freq_factors")


class RotaryEmbedding:
    """Precomputed cos/sin tables indexed by absolute position."""

    def __init__(
        self, head_dim: int, max_positions: int, theta: float, rope_scaling: dict[str, Any] | None, dtype: torch.dtype
    ) -> None:
        inv_freq = inverse_frequencies(head_dim, theta, rope_scaling)
        t = torch.arange(max_positions, dtype=torch.float64)
        freqs = torch.outer(t, inv_freq)
        self.cos = torch.cat([freqs, freqs], dim=-1).cos().to(dtype)
        # rotate_half(x) * sin == roll(x, half) * [-sin, sin]: the sign lives in the table.
        self.signed_sin = torch.cat([-freqs.sin(), freqs.sin()], dim=-1).to(dtype)
        self.half = head_dim // 2

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin for `positions` [T], shaped [T, 1, head_dim]; computed once per step."""
        return self.cos[positions].unsqueeze(1), self.signed_sin[positions].unsqueeze(1)

    def apply(self, x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Rotate x [T, heads, head_dim] by the angles in `tables`."""
        cos, signed_sin = tables
        return x * cos + torch.roll(x, self.half, dims=-1) * signed_sin


class CompiledRotary:
    """RotaryEmbedding's rotation in one compiled CPU call (cpu_ops.rotary); equal up to FMA rounding."""

    def __init__(self, rope: RotaryEmbedding, ops: Any) -> None:
        self.cos = rope.cos.contiguous()
        self.signed_sin = rope.signed_sin.contiguous()
        self._rotary = ops.rotary

    def tables(self, positions: torch.Tensor) -> torch.Tensor:
        """The kernel indexes the tables itself: its 'tables' are the positions."""
        return positions

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x [T, heads, head_dim] (head dim contiguous) at `positions` [T]; returns a new tensor."""
        return self._rotary(x, self.cos, self.signed_sin, positions)
