"""`local:` on the packaged model: greedy text equals the offline engine's, early exit aborts."""

import asyncio

import pytest

from tests.providers.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS
from vivace.engine.config import SamplingParams
from vivace.providers import GenerationRequest, ProviderError, get_provider
from vivace.providers.local import LocalProvider, sampling_params_for

pytestmark = pytest.mark.slow


@pytest.fixture
def local(served) -> LocalProvider:
    """A LocalProvider on the served engine (float32, the same one the offline references came from)."""
    return LocalProvider(served.engine)


@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_greedy_text_equals_the_offline_engine(local, served, kind):
    if kind == "chat":
        request = GenerationRequest(messages=GREEDY_MESSAGES, max_tokens=GREEDY_TOKENS, temperature=0)
    else:
        request = GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=GREEDY_TOKENS, temperature=0)
    deltas = [d async for d in local.stream(request)]
    reference = served.offline[kind]
    assert "".join(d.text for d in deltas) == reference.outputs[0].text
    assert sum(d.tokens for d in deltas) == len(reference.outputs[0].token_ids)
    last = deltas[-1]
    assert last.finish_reason == reference.outputs[0].finish_reason
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        len(reference.prompt_token_ids),
        len(reference.outputs[0].token_ids),
    )
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])


async def test_leaving_early_aborts_and_frees_blocks(local, served):
    stream = local.stream(GenerationRequest(prompt="Once upon a time", max_tokens=300, ignore_eos=True))
    await anext(stream)
    assert served.engine.stats()["blocks_in_use"] > 0
    await stream.aclose()
    for _ in range(50):
        if served.engine.stats()["blocks_in_use"] == 0:
            break
        await asyncio.sleep(0.05)
    assert served.engine.stats()["blocks_in_use"] == 0


async def test_bad_sampling_value_is_a_400_naming_the_field(local):
    with pytest.raises(ProviderError, match="temperature") as err:
        await local.complete(GenerationRequest(prompt="x", temperature=-1))
    assert err.value.status == 400


async def test_too_long_prompt_is_a_400(local):
    with pytest.raises(ProviderError, match="context") as err:
        await local.complete(GenerationRequest(prompt="word " * 2000, max_tokens=4))
    assert err.value.status == 400


def test_extra_fields_reach_sampling_params_and_unknown_ones_are_named():
    params = sampling_params_for(GenerationRequest(prompt="x", max_tokens=3, stop=["."], extra={"min_p": 0.1}))
    assert params == SamplingParams(max_tokens=3, stop=["."], min_p=0.1)
    with pytest.raises(ProviderError, match="frobnicate"):
        sampling_params_for(GenerationRequest(prompt="x", extra={"frobnicate": 1}))


async def test_get_provider_local_loads_the_packaged_model_and_aclose_shuts_it_down():
    provider = get_provider("local:", kv_cache_memory_bytes=16 << 20, max_model_len=128, quantization="none")
    assert isinstance(provider, LocalProvider) and provider.id == "local:"
    text, last = await provider.complete(GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=4, temperature=0))
    assert last.usage.completion_tokens == 4 and text
    await provider.aclose()
    assert not provider.engine._thread.is_alive()
    with pytest.raises(ProviderError) as err:
        await provider.complete(GenerationRequest(prompt="x", max_tokens=2))
    assert err.value.status == 503
