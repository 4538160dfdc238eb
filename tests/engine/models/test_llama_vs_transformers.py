"""The model code on HF-layout directories (Llama with llama3 RoPE scaling, Qwen2 with q/k/v bias and
tied embeddings) against transformers' own implementation of the same random-weight models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_hf_models import TINY_LLAMA, write_random_hf_model
from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM

pytestmark = pytest.mark.slow

CASES = {
    "llama3-rope": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            rope_theta=500000.0,
            tie_word_embeddings=False,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    "qwen2-bias-tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1000000.0, tie_word_embeddings=True)),
}


def write_model(path: Path, case: str, model_path: str) -> torch.nn.Module:
    config_cls, model_cls, extra = CASES[case]
    return write_random_hf_model(
        path, config_cls, model_cls, {**TINY_LLAMA, **extra}, model_path, chat_template=True, add_bos_token=False
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefill_and_greedy_match_transformers(tmp_path: Path, case: str, model_path: str) -> None:
    reference = write_model(tmp_path, case, model_path)
    llm = LLM(str(tmp_path), quantization="none", kv_cache_memory_bytes=16 << 20)
    assert llm.engine.model_config.attention_bias == (case.startswith("qwen2"))
    ids = [int(t) for t in torch.randint(3, 49000, (150,), generator=torch.Generator().manual_seed(1))]
    # Positions past original_max_position_embeddings exercise the llama3 frequency scaling.
    out = llm.generate([ids], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=1))[0]
    with torch.inference_mode():
        expected = reference.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=12,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(ids) :].tolist()
        full = torch.tensor([ids + out.outputs[0].token_ids])
        ref_logprobs = torch.log_softmax(reference(full).logits[0, len(ids) - 1 : -1].float(), dim=-1)
    assert out.outputs[0].token_ids == expected
    ours = torch.tensor([lp.logprob for lp in out.outputs[0].logprobs])
    theirs = ref_logprobs.gather(1, torch.tensor(expected).unsqueeze(1)).squeeze(1)
    assert torch.allclose(ours, theirs, atol=1e-3), (ours - theirs).abs().max()
