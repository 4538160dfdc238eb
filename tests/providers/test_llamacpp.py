"""`llamacpp:` on the packaged GGUF: text and counts agree with llama-cpp-python's own API."""

import asyncio

import pytest

from tests.providers.conftest import GREEDY_MESSAGES, GREEDY_PROMPT
from vivace.providers import GenerationRequest, ProviderError, get_provider

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (optional extra: pip install 'vivace[llamacpp]')"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def provider():
    from vivace.engine.loaders.default_model import default_model_path

    p = get_provider(f"llamacpp:{default_model_path()}", n_ctx=512, n_threads=2)
    yield p
    asyncio.run(p.aclose())


async def test_greedy_completion_equals_create_completion(provider):
    deltas = [d async for d in provider.stream(GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=16, temperature=0))]
    reference = provider.llm.create_completion(GREEDY_PROMPT, max_tokens=16, temperature=0.0)
    assert "".join(d.text for d in deltas) == reference["choices"][0]["text"]
    last = deltas[-1]
    assert last.finish_reason == reference["choices"][0]["finish_reason"]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        reference["usage"]["prompt_tokens"],
        reference["usage"]["completion_tokens"],
    )
    assert sum(d.tokens for d in deltas) == last.usage.completion_tokens


async def test_greedy_chat_equals_create_chat_completion(provider):
    text, last = await provider.complete(GenerationRequest(messages=GREEDY_MESSAGES, max_tokens=16, temperature=0))
    reference = provider.llm.create_chat_completion(GREEDY_MESSAGES, max_tokens=16, temperature=0.0)
    assert text == reference["choices"][0]["message"]["content"]
    assert last.usage.prompt_tokens == reference["usage"]["prompt_tokens"]


async def test_ignore_eos_runs_to_max_tokens_and_stop_strings_cut(provider):
    _, last = await provider.complete(GenerationRequest(prompt="Hi", max_tokens=40, temperature=0, ignore_eos=True))
    assert (last.finish_reason, last.usage.completion_tokens) == ("length", 40)
    full, _ = await provider.complete(GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=12, temperature=0))
    cut, last = await provider.complete(
        GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=12, temperature=0, stop=["."])
    )
    assert "." in full and cut == full[: full.index(".")] and last.finish_reason == "stop"


async def test_leaving_early_frees_the_model_for_the_next_request(provider):
    stream = provider.stream(GenerationRequest(prompt="Once", max_tokens=400, ignore_eos=True))
    await anext(stream)
    await stream.aclose()
    _, last = await asyncio.wait_for(provider.complete(GenerationRequest(prompt="Hi", max_tokens=3)), timeout=30)
    assert last.usage.completion_tokens == 3


async def test_too_long_a_request_is_a_400(provider):
    with pytest.raises(ProviderError, match="exceeds the context") as err:
        await provider.complete(GenerationRequest(prompt="Hi", max_tokens=5000))
    assert err.value.status == 400


async def test_eos_counts_as_a_completion_token_like_the_other_providers(provider):
    text, last = await provider.complete(
        GenerationRequest(messages=[{"role": "user", "content": "Say OK."}], max_tokens=200, temperature=0)
    )
    assert last.finish_reason == "stop"  # the chat model ends its turn well before 200 tokens
    reference = provider.llm.create_chat_completion(
        [{"role": "user", "content": "Say OK."}], max_tokens=200, temperature=0.0
    )
    assert text == reference["choices"][0]["message"]["content"]
    assert last.usage.completion_tokens == reference["usage"]["completion_tokens"] + 1
