"""OpenAI-compatible providers against a live vivace server and a scripted peer, over real HTTP/SSE."""

from __future__ import annotations

import pytest

from tests.live_server import free_port
from tests.providers.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS, MODEL
from vivace.providers import GenerationRequest, ProviderError, get_provider
from vivace.providers.openai_compat import OpenAICompatibleProvider, parse_retry_after

pytestmark = pytest.mark.slow


def _greedy(**kw) -> GenerationRequest:
    return GenerationRequest(max_tokens=GREEDY_TOKENS, temperature=0.0, **kw)


async def test_chat_text_and_usage_match_the_server_greedy_reference(served):
    provider = get_provider(f"openai-compatible:{MODEL}@{served.base_url}")
    deltas = [d async for d in provider.stream(_greedy(messages=GREEDY_MESSAGES))]
    await provider.aclose()
    reference = served.offline["chat"]
    assert "".join(d.text for d in deltas) == reference.outputs[0].text
    last = deltas[-1]
    assert last.finish_reason == reference.outputs[0].finish_reason
    assert last.usage.prompt_tokens == len(reference.prompt_token_ids)
    assert last.usage.completion_tokens == len(reference.outputs[0].token_ids)
    assert all(d.finish_reason is None for d in deltas[:-1])


async def test_raw_prompt_goes_to_completions(served):
    provider = get_provider(f"openai-compatible:{MODEL}@{served.base_url}")
    text, last = await provider.complete(_greedy(prompt=GREEDY_PROMPT))
    await provider.aclose()
    reference = served.offline["completion"]
    assert text == reference.outputs[0].text
    assert last.usage.prompt_tokens == len(reference.prompt_token_ids)
    assert last.usage.completion_tokens == GREEDY_TOKENS


async def test_unknown_model_is_a_404_provider_error(served):
    provider = get_provider(f"openai-compatible:no-such-model@{served.base_url}", retries=0)
    with pytest.raises(ProviderError) as err:
        await provider.complete(_greedy(prompt="Hi"))
    await provider.aclose()
    assert err.value.status == 404
    assert not err.value.retryable
    assert "no-such-model" in str(err.value)


async def test_invalid_parameter_is_a_400_naming_the_field(served):
    provider = get_provider(f"openai-compatible:{MODEL}@{served.base_url}", retries=0)
    with pytest.raises(ProviderError) as err:
        await provider.complete(GenerationRequest(prompt="Hi", max_tokens=4, top_p=7.0))
    await provider.aclose()
    assert err.value.status == 400
    assert "top_p" in str(err.value)


async def test_closing_the_stream_early_aborts_the_server_request(served):
    import asyncio

    provider = get_provider(f"openai-compatible:{MODEL}@{served.base_url}")
    stream = provider.stream(GenerationRequest(prompt="Once upon a time", max_tokens=400, ignore_eos=True))
    first = await anext(stream)
    await stream.aclose()
    await provider.aclose()
    assert first.text  # empty role-only chunks are not passed on
    for _ in range(100):  # the server notices the hang-up and frees the blocks
        if served.engine.stats()["blocks_in_use"] == 0:
            break
        await asyncio.sleep(0.05)
    assert served.engine.stats()["blocks_in_use"] == 0


async def test_error_event_in_the_stream_is_a_provider_error(peer):
    peer.plan({"do": "error_after", "after": 1, "words": ["a", "b", "c"]})
    provider = OpenAICompatibleProvider("m", peer.base_url)
    received = []
    with pytest.raises(ProviderError, match="scripted failure mid-stream") as err:
        async for delta in provider.stream(GenerationRequest(messages=[{"role": "user", "content": "x"}])):
            received.append(delta.text)
    await provider.aclose()
    assert received == ["a"]
    assert err.value.status == 500


async def test_request_body_carries_sampling_fields_and_include_usage(peer):
    provider = OpenAICompatibleProvider("m", peer.base_url, api_key="sk-abc")
    request = GenerationRequest(
        prompt="p",
        max_tokens=5,
        temperature=0.5,
        top_p=0.9,
        stop=["\n"],
        seed=3,
        ignore_eos=True,
        extra={"min_tokens": 2},
    )
    text, last = await provider.complete(request)
    await provider.aclose()
    sent = peer.requests[0]
    assert sent["path"] == "/v1/completions"
    assert sent["authorization"] == "Bearer sk-abc"
    assert sent["body"] == {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "prompt": "p",
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 3,
        "ignore_eos": True,
        "min_tokens": 2,
    }
    assert (text, last.finish_reason, last.usage.completion_tokens) == ("Hello world", "stop", 2)


async def test_connection_refused_is_retryable():
    provider = OpenAICompatibleProvider("m", f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2)
    with pytest.raises(ProviderError, match="connection failed") as err:
        await provider.complete(GenerationRequest(prompt="x"))
    await provider.aclose()
    assert err.value.retryable and err.value.status is None


async def test_read_timeout_is_a_retryable_provider_error(peer):
    peer.plan({"do": "sleep", "seconds": 2.0})
    provider = OpenAICompatibleProvider("m", peer.base_url, read_timeout=0.3)
    with pytest.raises(ProviderError, match="timed out") as err:
        await provider.complete(GenerationRequest(prompt="x"))
    await provider.aclose()
    assert err.value.retryable


async def test_api_key_never_in_repr_or_error_messages(peer, monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "gsk-very-secret-123")
    provider = get_provider("groq:llama", base_url=peer.base_url, retries=0)
    assert "gsk-very-secret-123" not in repr(provider) and "gsk-very-secret-123" not in str(provider)
    peer.plan({"do": "status", "status": 401, "echo_auth": True})
    with pytest.raises(ProviderError) as err:
        await provider.complete(GenerationRequest(prompt="x"))
    await provider.aclose()
    assert peer.requests[0]["authorization"] == "Bearer gsk-very-secret-123"  # it was sent...
    assert "gsk-very-secret-123" not in str(err.value) and "***" in str(err.value)  # ...but never echoed
    assert err.value.status == 401


def test_retry_after_parses_seconds_and_http_dates():
    import time
    from email.utils import formatdate

    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 8 <= parse_retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert parse_retry_after(formatdate(time.time() - 100, usegmt=True)) == 0.0


@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_text_with_unicode_line_separators_streams_intact(peer, kind):
    # The server sends these unescaped inside JSON strings; a reader splitting like str.splitlines
    # cut the event in two and failed the request as a 502.
    words = ["one\u2028two", " three\u2029four", " five\u0085six"]
    peer.plan({"do": "ok", "words": words, "raw": True})
    provider = OpenAICompatibleProvider("m", peer.base_url)
    request = (
        GenerationRequest(messages=[{"role": "user", "content": "x"}])
        if kind == "chat"
        else GenerationRequest(prompt="x")
    )
    text, last = await provider.complete(request)
    await provider.aclose()
    assert text == "".join(words)
    assert last.finish_reason == "stop"


async def test_pool_holds_every_request_in_flight_past_httpx_defaults(peer):
    import asyncio

    # httpx's default pool would hold the 101st request back until one of the first 100 finished.
    count = 130
    peer.plan(*[{"do": "sleep", "seconds": 6.0} for _ in range(count)])
    provider = OpenAICompatibleProvider("m", peer.base_url)
    await asyncio.gather(*(provider.complete(GenerationRequest(prompt="x")) for _ in range(count)))
    await provider.aclose()
    assert len(peer.requests) == count
    assert peer.most_sleeping == count  # every request was at the peer at once
