"""Ordered fallback between providers, against real HTTP peers."""

from __future__ import annotations

import pytest

from tests.live_server import free_port
from vivace.providers import GenerationRequest, ProviderError, get_provider
from vivace.providers.fallback import AllProvidersFailedError, FallbackProvider

REQUEST = GenerationRequest(prompt="hi")


async def test_moves_on_when_the_first_provider_cannot_connect(peer):
    dead = f"openai-compatible:a@http://127.0.0.1:{free_port()}/v1"
    provider = get_provider(f"{dead},openai-compatible:b@{peer.base_url}", retries=0)
    assert isinstance(provider, FallbackProvider)
    text, last = await provider.complete(REQUEST)
    await provider.aclose()
    assert text == "Hello world" and last.usage.completion_tokens == 2
    assert provider.last_used is provider.providers[1]
    assert peer.requests[0]["body"]["model"] == "b"


async def test_moves_on_after_an_http_error(peer):
    peer.plan({"do": "status", "status": 500}, {"do": "ok", "words": ["second"]})
    provider = FallbackProvider(
        [
            get_provider(f"openai-compatible:a@{peer.base_url}", retries=0),
            get_provider(f"openai-compatible:b@{peer.base_url}", retries=0),
        ]
    )
    text, _ = await provider.complete(REQUEST)
    await provider.aclose()
    assert text == "second" and [r["body"]["model"] for r in peer.requests] == ["a", "b"]


async def test_all_failing_reports_every_error(peer):
    peer.plan({"do": "status", "status": 500}, {"do": "status", "status": 404})
    provider = get_provider(f"openai-compatible:a@{peer.base_url},openai-compatible:b@{peer.base_url}", retries=0)
    with pytest.raises(AllProvidersFailedError) as err:
        await provider.complete(REQUEST)
    await provider.aclose()
    assert [pid.split("@")[0] for pid, _ in err.value.errors] == ["openai-compatible:a", "openai-compatible:b"]
    assert err.value.status == 404 and "HTTP 500" in str(err.value) and "HTTP 404" in str(err.value)


async def test_failure_after_streaming_does_not_fall_back(peer):
    peer.plan({"do": "error_after", "after": 1, "words": ["x", "y"]}, {"do": "ok"})
    provider = get_provider(f"openai-compatible:a@{peer.base_url},openai-compatible:b@{peer.base_url}", retries=0)
    texts = []
    with pytest.raises(ProviderError, match="mid-stream"):
        async for delta in provider.stream(REQUEST):
            texts.append(delta.text)
    await provider.aclose()
    assert texts == ["x"] and len(peer.requests) == 1


def test_needs_at_least_one_provider():
    with pytest.raises(ValueError, match="at least one"):
        FallbackProvider([])
