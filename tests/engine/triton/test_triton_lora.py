"""The Triton gathered multi-LoRA op against a plain per-token reference, through LoRALinear, and an engine on the
Triton kernel set with adapters against transformers + peft (interpreted)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from tests.lora_gathered import IN, SLOT_CASES, adapters, lora_layer, per_token_reference  # noqa: E402
from tests.lora_models import TRAIN_PROMPT, peft_greedy, peft_reference, write_lora_models  # noqa: E402
from vivace.engine.config import SamplingParams  # noqa: E402
from vivace.engine.kernels.triton_lora import lora_add  # noqa: E402
from vivace.engine.llm import LLM  # noqa: E402

TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2}
MAX_TOKENS = 6


@pytest.mark.parametrize("slots", SLOT_CASES[:4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_op_matches_per_token_reference(slots: list[int], dtype: torch.dtype) -> None:
    weights = adapters()
    x = torch.randn(len(slots), IN)
    layer = lora_layer(weights, lora_add, dtype)
    layer.step.set(slots, dtype, torch.device("cpu"))
    expected = per_token_reference(x.to(dtype), slots, weights)
    got = layer(x.to(dtype)).float()
    torch.testing.assert_close(got, expected, rtol=TOL[dtype], atol=TOL[dtype] * expected.abs().max().item())


@pytest.mark.slow
def test_engine_with_adapters_on_triton_matches_peft(tmp_path: Path, model_path: str) -> None:
    """Every adapter and none in one batch on the Triton kernel set: each request's greedy tokens are peft's."""
    models = write_lora_models(tmp_path, model_path)
    llm = LLM(
        str(models.base),
        quantization="none",
        attention_backend="triton",
        kv_cache_memory_bytes=16 << 20,
        max_lora_rank=8,
        lora_modules={name: str(path) for name, path in models.adapters.items()},
    )
    names = [None, *models.adapters]
    greedy = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    outs = llm.generate([TRAIN_PROMPT] * len(names), greedy, lora=names)
    for out, name in zip(outs, names, strict=True):
        reference = peft_reference(models.base, None if name is None else models.adapters[name])
        assert out.outputs[0].token_ids == peft_greedy(reference, TRAIN_PROMPT, MAX_TOKENS)[0], name
    assert llm.engine.scheduler.kv.num_used == 0
