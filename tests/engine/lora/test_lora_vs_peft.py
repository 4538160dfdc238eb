"""Multi-LoRA against transformers + peft on the same tiny random Llama: each adapter's greedy tokens and
logprobs, mixed batches (several adapters and none in the same steps) equal to one-by-one runs, adapters
kept apart in the prefix cache, and no KV block left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.lora_models import (
    TRAIN_PROMPT,
    TRAIN_TARGET,
    LoRAModels,
    peft_greedy,
    peft_reference,
    write_lora_models,
)
from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM

pytestmark = pytest.mark.slow
MAX_TOKENS = 10
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> LoRAModels:
    return write_lora_models(tmp_path_factory.mktemp("lora"), model_path)


@pytest.fixture(scope="module", params=["torch", "cpu"])
def llm(request: pytest.FixtureRequest, models: LoRAModels) -> LLM:
    """The base model with every adapter loaded, on the reference kernels and on the C++ CPU ones."""
    return LLM(
        str(models.base),
        quantization="none",
        attention_backend=request.param,
        kv_cache_memory_bytes=16 << 20,
        max_lora_rank=8,
        lora_modules={name: str(path) for name, path in models.adapters.items()},
    )


def prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(3)
    return [TRAIN_PROMPT] + [[int(t) for t in torch.randint(3, 49000, (n,), generator=generator)] for n in (37, 5, 70)]


@pytest.mark.parametrize("adapter", [None, "all-r8", "qv-down-r4-rslora", "trained"])
def test_each_adapter_matches_peft(llm: LLM, models: LoRAModels, adapter: str | None) -> None:
    reference = peft_reference(models.base, None if adapter is None else models.adapters[adapter])
    for ids in prompts():
        out = llm.generate([ids], GREEDY, lora=adapter)[0].outputs[0]
        expected, expected_logprobs = peft_greedy(reference, ids, MAX_TOKENS)
        assert out.token_ids == expected, (adapter, ids[:4])
        ours = torch.tensor([lp.logprob for lp in out.logprobs])
        assert torch.allclose(ours, expected_logprobs, atol=1e-3), (ours - expected_logprobs).abs().max()
    assert llm.engine.scheduler.kv.num_used == 0


def test_adapters_change_the_output(llm: LLM) -> None:
    """Each adapter's greedy continuation differs from the base model's; the trained one says what it learned."""
    outputs = {
        name: llm.generate([TRAIN_PROMPT], GREEDY, lora=name)[0].outputs[0].token_ids
        for name in [None, "all-r8", "qv-down-r4-rslora", "trained"]
    }
    assert outputs["trained"][: len(TRAIN_TARGET)] == TRAIN_TARGET
    assert all(outputs[name] != outputs[None] for name in ["all-r8", "qv-down-r4-rslora", "trained"]), outputs


def test_mixed_batch_equals_one_by_one(llm: LLM) -> None:
    """Requests with different adapters and none run in the same steps, each exactly as it runs alone."""
    cases = [(ids, name) for ids in prompts() for name in [None, "all-r8", "qv-down-r4-rslora", "trained"]]
    alone = [llm.generate([ids], GREEDY, lora=name)[0].outputs[0] for ids, name in cases]
    steps_before = llm.engine.num_steps
    together = llm.generate([ids for ids, _ in cases], GREEDY, lora=[name for _, name in cases])
    # 16 requests of at most 80 prompt tokens fit the 512-token budget: one prefill step, then shared decodes.
    assert llm.engine.num_steps - steps_before == MAX_TOKENS
    for out, single in zip(together, alone, strict=True):
        assert out.outputs[0].token_ids == single.token_ids
        ours = torch.tensor([lp.logprob for lp in out.outputs[0].logprobs])
        theirs = torch.tensor([lp.logprob for lp in single.logprobs])
        assert torch.allclose(ours, theirs, atol=1e-4)
    assert llm.engine.scheduler.kv.num_used == 0


def test_prefix_cache_keeps_adapters_apart(llm: LLM, models: LoRAModels) -> None:
    """The same long prompt under the base model, then an adapter: the adapter's run reuses none of the base KV."""
    ids = [int(t) for t in torch.randint(3, 49000, (64,), generator=torch.Generator().manual_seed(9))]
    llm.generate([ids], GREEDY)
    reused = llm.engine.scheduler.stats.prompt_tokens_reused
    out = llm.generate([ids], GREEDY, lora="all-r8")[0].outputs[0]
    assert llm.engine.scheduler.stats.prompt_tokens_reused == reused
    assert out.token_ids == peft_greedy(peft_reference(models.base, models.adapters["all-r8"]), ids, MAX_TOKENS)[0]
    llm.generate([ids], GREEDY, lora="all-r8")  # the same adapter again does reuse its own blocks
    assert llm.engine.scheduler.stats.prompt_tokens_reused > reused


def test_unload_and_reload(llm: LLM, models: LoRAModels, tmp_path: Path) -> None:
    """An unloaded adapter is unknown to requests; reloaded under another name it runs as before."""
    before = llm.generate([TRAIN_PROMPT], GREEDY, lora="trained")[0].outputs[0].token_ids
    llm.unload_lora("trained")
    with pytest.raises(ValueError, match="no adapter named 'trained'"):
        llm.generate([TRAIN_PROMPT], GREEDY, lora="trained")
    llm.load_lora("trained-again", str(models.adapters["trained"]))
    assert llm.generate([TRAIN_PROMPT], GREEDY, lora="trained-again")[0].outputs[0].token_ids == before
    llm.unload_lora("trained-again")
    llm.load_lora("trained", str(models.adapters["trained"]))
    assert llm.engine.scheduler.kv.num_used == 0


def test_unload_is_refused_while_requests_use_the_adapter(llm: LLM) -> None:
    llm.engine.add_request("busy", TRAIN_PROMPT, GREEDY, lora="all-r8")
    with pytest.raises(ValueError, match="in use by 1 unfinished"):
        llm.unload_lora("all-r8")
    llm.engine.abort("busy")
    assert llm.engine.scheduler.kv.num_used == 0
    assert "all-r8" in {lora.name for lora in llm.engine.loras()}
