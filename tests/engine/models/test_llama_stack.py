"""The compiled layer stack (models/llama_stack.py) against the Python layers it replaces: same bits."""

from __future__ import annotations

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM


def _runs(llm: LLM, prompts: list[str], params: SamplingParams) -> list[tuple[list[int], list[float], list[float]]]:
    out = []
    for result in llm.generate(prompts, params):
        choice = result.outputs[0]
        out.append(
            (
                choice.token_ids,
                [t.logprob for t in choice.logprobs or []],
                [t.logprob for t in result.prompt_logprobs or []],
            )
        )
    return out


def test_the_compiled_stack_gives_the_python_layers_bits() -> None:
    """Decodes of several lengths beside prefills (chunked: a small token budget), greedy with logprobs of
    every generated and prompt token: equal to the last bit with and without the stack."""
    prompts = [
        "The history of the river Thames, from its source to the sea, " * 6,
        "Hi",
        "List three colours:",
    ]
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True, logprobs=1, prompt_logprobs=1)
    fused = LLM(kv_cache_memory_bytes=64 << 20, max_num_batched_tokens=48)
    assert fused.engine.model.stack is not None  # the default model: Q4_1 / Q8_0 blocks on the cpu kernels
    plain = LLM(kv_cache_memory_bytes=64 << 20, max_num_batched_tokens=48)
    plain.engine.model.stack = None
    assert _runs(fused, prompts, params) == _runs(plain, prompts, params)


def test_models_the_stack_does_not_cover_keep_the_python_layers() -> None:
    """Float weights (no GGUF blocks) and an int8 KV cache (its keys are rotated in Python) are not covered."""
    assert LLM(kv_cache_memory_bytes=16 << 20, quantization="none").engine.model.stack is None
    int8 = LLM(kv_cache_memory_bytes=16 << 20, kv_cache_dtype="int8")
    assert int8.engine.model.stack is not None
    calls = []
    stack = int8.engine.model.stack
    int8.engine.model.stack = type("Spy", (), {"forward": lambda self, *a: calls.append(a) or stack.forward(*a)})()
    assert int8.generate(["Hello"], SamplingParams(max_tokens=3))[0].outputs[0].token_ids
    assert calls == []  # every step took the Python layers
