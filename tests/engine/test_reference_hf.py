"""The engine against HF transformers loading the same GGUF: logits and greedy continuations."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.config import SamplingParams

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "List three prime numbers."},
        {"role": "assistant", "content": "2, 3, 5."},
        {"role": "user", "content": "Three more, please, and explain why they are prime."},
    ],
]
RAW = ["The quick brown fox", "def fibonacci(n):\n    ", "Les mots français: été, où, garçon —"]


def _prompt_ids(llm, item) -> list[int]:
    if isinstance(item, str):
        return llm.engine.tokenize_prompt(item)
    return llm.tokenizer.encode_chat(item)


def _vivace_prefill_logits(llm, ids: list[int]) -> tuple[int, torch.Tensor]:
    """Logits of one engine prefill (scheduler -> runner -> model) and the first position computed.

    Positions before it came from the prefix cache (blocks shared with earlier prompts).
    """
    engine = llm.engine
    engine.add_request("ref-logits", ids, SamplingParams(max_tokens=1))
    batch = engine.scheduler.schedule()
    try:
        assert [item.seq.request_id for item in batch.prefills] == ["ref-logits"]
        with torch.inference_mode():
            inputs = engine.runner.prepare_inputs(batch)
            hidden = engine.model.forward(inputs.input_ids, inputs.positions, inputs.attn_metadata, engine.runner.kv_cache)
            return batch.prefills[0].start, engine.model.compute_logits(hidden)
    finally:
        engine.abort("ref-logits")


@pytest.mark.parametrize("item", CHATS + RAW, ids=[f"chat{i}" for i in range(len(CHATS))] + [f"raw{i}" for i in range(len(RAW))])
def test_prefill_logits_match_transformers(llm, hf_model, item) -> None:
    ids = _prompt_ids(llm, item)
    start, ours = _vivace_prefill_logits(llm, ids)
    with torch.inference_mode():
        theirs = hf_model(torch.tensor([ids])).logits[0, start:].float()
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff < 2e-3, f"max |logit difference| {diff}"
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_greedy_continuations_match_transformers(llm, hf_model) -> None:
    prompts = [_prompt_ids(llm, item) for item in CHATS + RAW[:2]]
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    ours = llm.generate(prompts, params)  # batched together: decodes and prefills share steps
    for ids, out in zip(prompts, ours):
        with torch.inference_mode():
            ref = hf_model.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False, max_new_tokens=64, eos_token_id=None, pad_token_id=0,
            )[0, len(ids):].tolist()
        assert out.outputs[0].token_ids == ref
        assert len(ref) == 64
    assert llm.engine.scheduler.kv.num_used == 0
