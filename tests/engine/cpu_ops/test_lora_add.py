"""The compiled gathered multi-LoRA op (lora.cpp) against a plain per-token reference, through LoRALinear."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.lora.layers import LoRALinear, StepSlots

pytestmark = pytest.mark.skipif(load_cpu_ops() is None, reason="no C++ compiler here: the torch path is used")

IN, OUTS, MAX_LORAS, MAX_RANK = 67, [40, 24, 24], 3, 8  # odd widths: the kernel's vector loops have tails
RANKS = {0: 8, 1: 3, 2: 5}  # slot -> adapter rank (lower ranks zero-padded in the stacked matrices)


def base(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0], sum(OUTS)), 0.5)


def adapters() -> dict[int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per slot, per part: A [r, IN] and scaled B [out, r]."""
    torch.manual_seed(0)
    return {s: [(torch.randn(r, IN), torch.randn(out, r)) for out in OUTS] for s, r in RANKS.items()}


def layer_with(step: StepSlots, weights: dict[int, list[tuple[torch.Tensor, torch.Tensor]]]) -> LoRALinear:
    layer = LoRALinear(base, IN, OUTS, MAX_LORAS, MAX_RANK, step, torch.float32, torch.device("cpu"))
    for slot, parts in weights.items():
        step.ranks[slot] = RANKS[slot]
        for part, (a, b) in enumerate(parts):
            layer.set_slot(slot, part, a, b)
    return layer


def per_token_reference(x: torch.Tensor, slots: list[int], weights) -> torch.Tensor:
    rows = []
    for row, slot in zip(x, slots, strict=True):
        out = base(row[None])[0]
        if slot >= 0:
            out = out + torch.cat([b @ (a @ row) for a, b in weights[slot]])
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("slots", [[0], [-1], [2, -1, 1, 0, 2, 2, -1], [1] * 37, [i % 4 - 1 for i in range(130)]])
def test_gathered_op_matches_per_token_reference_and_masked_matmuls(slots: list[int]) -> None:
    weights = adapters()
    x = torch.randn(len(slots), IN)
    compiled = StepSlots(MAX_LORAS, load_cpu_ops().lora_add)
    masked = StepSlots(MAX_LORAS)
    compiled_layer, masked_layer = layer_with(compiled, weights), layer_with(masked, weights)
    compiled.set(slots, torch.float32, torch.device("cpu"))
    masked.set(slots, torch.float32, torch.device("cpu"))
    expected = per_token_reference(x, slots, weights)
    torch.testing.assert_close(compiled_layer(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masked_layer(x), expected, rtol=1e-4, atol=1e-4)


def test_a_row_does_not_depend_on_its_batch_mates() -> None:
    weights = adapters()
    step = StepSlots(MAX_LORAS, load_cpu_ops().lora_add)
    layer = layer_with(step, weights)
    x = torch.randn(9, IN)
    slots = [0, 1, 2, -1, 0, 1, 2, -1, 1]
    step.set(slots, torch.float32, torch.device("cpu"))
    together = layer(x)
    for i, slot in enumerate(slots):
        step.set([slot], torch.float32, torch.device("cpu"))
        assert torch.equal(layer(x[i : i + 1])[0], together[i])


def test_slot_out_of_range_is_refused() -> None:
    step = StepSlots(MAX_LORAS, load_cpu_ops().lora_add)
    layer = layer_with(step, adapters())
    step.set([MAX_LORAS], torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="out of range"):
        layer(torch.randn(1, IN))
