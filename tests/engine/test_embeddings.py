"""Embeddings (mean of the final hidden states, L2-normalized) against transformers on the same weights."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.config import InvalidParameterError, SamplingParams

TEXTS = ["The quick brown fox", "Les mots français: été, où, garçon —", "def fibonacci(n):\n    return n"]


def _reference(hf_model, ids: list[int]) -> torch.Tensor:
    """transformers' last_hidden_state (after the final norm) averaged over the prompt, normalized."""
    with torch.no_grad():
        hidden = hf_model.model(torch.tensor([ids])).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden.mean(dim=0), dim=0)


def test_embeddings_match_transformers(llm, hf_model):
    long_text = " ".join(f"word{i}" for i in range(200))  # hundreds of tokens in one batch with the short ones
    prompts = [*TEXTS, long_text]
    ours = llm.embed(prompts)
    for prompt, vector in zip(prompts, ours, strict=True):
        ids = llm.engine.tokenize_prompt(prompt)
        expected = _reference(hf_model, ids)
        got = torch.tensor(vector)
        assert got.shape == expected.shape == (llm.engine.model_config.hidden_size,)
        assert torch.linalg.vector_norm(got).item() == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


def test_chunked_prefill_and_repeats_give_the_same_vector(llm):
    from vivace.engine.llm import LLM

    text = " ".join(f"token{i}" for i in range(300))  # well over the small step budget below
    small_steps = LLM(
        llm.engine.config.model,
        kv_cache_memory_bytes=64 << 20,
        quantization="none",
        max_num_batched_tokens=64,
    )
    chunked = torch.tensor(small_steps.embed([text])[0])
    whole = torch.tensor(llm.embed([text])[0])
    again = torch.tensor(llm.embed([text])[0])  # its prefix is cached now: pooling must not reuse it
    torch.testing.assert_close(chunked, whole, atol=2e-5, rtol=0)
    torch.testing.assert_close(again, whole, atol=0, rtol=0)


def test_embedding_requests_have_one_sequence(llm):
    with pytest.raises(InvalidParameterError, match="n"):
        llm.engine.add_request("e", "hi", SamplingParams(n=2, max_tokens=1), pool=True)
