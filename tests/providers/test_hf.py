"""`hf:` on the packaged GGUF (transformers dequantizes it via gguf_file): greedy text equals vivace's."""

import asyncio

import pytest

from tests.providers.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS
from vivace.providers import GenerationRequest, ProviderError, get_provider

pytest.importorskip("transformers", reason="transformers is not installed (optional extra: pip install 'vivace[hf]')")
pytest.importorskip("accelerate", reason="accelerate is not installed (optional extra: pip install 'vivace[hf]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def provider():
    from vivace.engine.loaders.default_model import default_model_path

    p = get_provider(f"hf:{default_model_path()}")
    yield p
    asyncio.run(p.aclose())


@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_greedy_text_equals_vivace_offline(provider, served, kind):
    if kind == "chat":
        request = GenerationRequest(messages=GREEDY_MESSAGES, max_tokens=GREEDY_TOKENS, temperature=0)
    else:
        request = GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=GREEDY_TOKENS, temperature=0)
    deltas = [d async for d in provider.stream(request)]
    reference = served.offline[kind]  # vivace, float32 weights: the configuration checked against transformers
    assert "".join(d.text for d in deltas) == reference.outputs[0].text
    last = deltas[-1]
    assert last.finish_reason == "length"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (len(reference.prompt_token_ids), GREEDY_TOKENS)
    assert sum(d.tokens for d in deltas) == GREEDY_TOKENS


async def test_stop_string_and_ignore_eos(provider):
    full, _ = await provider.complete(GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=8, temperature=0))
    cut, last = await provider.complete(
        GenerationRequest(prompt=GREEDY_PROMPT, max_tokens=8, temperature=0, stop=["."])
    )
    assert "." in full and cut == full[: full.index(".")] and last.finish_reason == "stop"
    _, last = await provider.complete(GenerationRequest(prompt="Hi", max_tokens=20, temperature=0, ignore_eos=True))
    assert (last.finish_reason, last.usage.completion_tokens) == ("length", 20)


async def test_leaving_early_stops_generation(provider):
    stream = provider.stream(GenerationRequest(prompt="Once", max_tokens=500, ignore_eos=True))
    await anext(stream)
    await stream.aclose()
    # the lock is free again only once generate() has returned: the next request runs promptly
    _, last = await asyncio.wait_for(provider.complete(GenerationRequest(prompt="Hi", max_tokens=2)), timeout=60)
    assert last.usage.completion_tokens == 2


def test_missing_path_is_a_clear_error():
    with pytest.raises(ProviderError, match="never downloaded"):
        get_provider("hf:/no/such/model.gguf")
