"""The compiled gathered multi-LoRA op (lora.cpp) against a plain per-token reference, through LoRALinear."""

from __future__ import annotations

import pytest
import torch

from tests.lora_gathered import IN, MAX_LORAS, SLOT_CASES, adapters, lora_layer, per_token_reference
from vivace.engine.cpu_ops import load_cpu_ops

pytestmark = pytest.mark.skipif(load_cpu_ops() is None, reason="no C++ compiler here: the torch path is used")
CPU = torch.device("cpu")


@pytest.mark.parametrize("slots", SLOT_CASES)
def test_gathered_op_and_masked_matmuls_match_per_token_reference(slots: list[int]) -> None:
    weights = adapters()
    x = torch.randn(len(slots), IN)
    expected = per_token_reference(x, slots, weights)
    for lora_add in (load_cpu_ops().lora_add, None):
        layer = lora_layer(weights, lora_add)
        layer.step.set(slots, torch.float32, CPU)
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_a_row_does_not_depend_on_its_batch_mates() -> None:
    layer = lora_layer(adapters(), load_cpu_ops().lora_add)
    x = torch.randn(9, IN)
    slots = [0, 1, 2, -1, 0, 1, 2, -1, 1]
    layer.step.set(slots, torch.float32, CPU)
    together = layer(x)
    for i, slot in enumerate(slots):
        layer.step.set([slot], torch.float32, CPU)
        assert torch.equal(layer(x[i : i + 1])[0], together[i])


def test_slot_out_of_range_is_refused() -> None:
    layer = lora_layer(adapters(), load_cpu_ops().lora_add)
    layer.step.set([MAX_LORAS], torch.float32, CPU)
    with pytest.raises(RuntimeError, match="out of range"):
        layer(torch.randn(1, IN))
