"""A LoRA linear with three adapters of different ranks and a plain per-token reference for it, shared by
the tests of the gathered LoRA ops (the C++ one and the Triton one)."""

from __future__ import annotations

import torch

from vivace.engine.lora.layers import LoRAAdd, LoRALinear, StepSlots

IN, OUTS, MAX_LORAS, MAX_RANK = 67, [40, 24, 24], 3, 8  # odd widths: the kernels' vector loops have tails
RANKS = {0: 8, 1: 3, 2: 5}  # slot -> adapter rank (lower ranks zero-padded in the stacked matrices)
Weights = dict[int, list[tuple[torch.Tensor, torch.Tensor]]]


def base(x: torch.Tensor) -> torch.Tensor:
    """The base layer: a constant, so a wrong add anywhere shows."""
    return torch.full((x.shape[0], sum(OUTS)), 0.5, dtype=x.dtype, device=x.device)


def adapters() -> Weights:
    """Per slot, per part: A [r, IN] and scaled B [out, r]."""
    gen = torch.Generator().manual_seed(0)
    return {
        s: [(torch.randn(r, IN, generator=gen), torch.randn(out, r, generator=gen)) for out in OUTS]
        for s, r in RANKS.items()
    }


def lora_layer(weights: Weights, lora_add: LoRAAdd | None, dtype=torch.float32, device="cpu") -> LoRALinear:
    """A LoRALinear over `base` holding `weights`, computing with `lora_add` (None: the masked matmuls)."""
    step = StepSlots(MAX_LORAS, lora_add)
    layer = LoRALinear(base, IN, OUTS, MAX_LORAS, MAX_RANK, step, dtype, torch.device(device))
    for slot, parts in weights.items():
        step.ranks[slot] = RANKS[slot]
        for part, (a, b) in enumerate(parts):
            layer.set_slot(slot, part, a.to(dtype), b.to(dtype))
    return layer


def per_token_reference(x: torch.Tensor, slots: list[int], weights: Weights) -> torch.Tensor:
    """Each row on its own, in float32: base + B_s @ (A_s @ x) for every part of its slot s."""
    rows = []
    for row, slot in zip(x.float().cpu(), slots, strict=True):
        out = base(row[None])[0]
        if slot >= 0:
            out = out + torch.cat([b @ (a @ row) for a, b in weights[slot]])
        rows.append(out)
    return torch.stack(rows)


SLOT_CASES = [[0], [-1], [2, -1, 1, 0, 2, 2, -1], [1] * 37, [i % 4 - 1 for i in range(130)]]
