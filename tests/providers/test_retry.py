"""Retries: backoff arithmetic, and behaviour against a real peer that answers 429/5xx."""

from __future__ import annotations

import random

import pytest

from vivace.providers import GenerationRequest, ProviderError, get_provider
from vivace.providers.retry import RetryingProvider, RetryPolicy

REQUEST = GenerationRequest(messages=[{"role": "user", "content": "hi"}])


def test_backoff_doubles_within_jitter_and_caps():
    policy = RetryPolicy(max_retries=10, base_delay=1.0, max_delay=5.0, jitter=0.5)
    rng = random.Random(0)
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (6, 5.0)]:
        for _ in range(50):
            assert full * 0.5 <= policy.delay(attempt, rng=rng) <= full


def test_retry_after_wins_and_limits_give_up():
    policy = RetryPolicy(max_retries=2, max_retry_after=10)
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=11.0) is None  # too long to wait: propagate
    assert policy.delay(2) is None  # retries used up


def test_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2.0)


async def test_429_with_retry_after_is_waited_out_then_succeeds(peer):
    peer.plan({"do": "status", "status": 429, "retry_after": "0.4"}, {"do": "ok"})
    provider = get_provider(f"openai-compatible:m@{peer.base_url}", retries=3)
    text, last = await provider.complete(REQUEST)
    await provider.aclose()
    assert text == "Hello world" and last.finish_reason == "stop"
    assert len(peer.requests) == 2 and provider.attempts == 2
    assert peer.requests[1]["time"] - peer.requests[0]["time"] >= 0.4


async def test_5xx_retried_until_the_budget_runs_out(peer):
    peer.plan(*[{"do": "status", "status": 503}] * 3)
    provider = get_provider(f"openai-compatible:m@{peer.base_url}", retries=2, backoff=0.01)
    with pytest.raises(ProviderError) as err:
        await provider.complete(REQUEST)
    await provider.aclose()
    assert err.value.status == 503 and len(peer.requests) == 3


async def test_4xx_is_not_retried(peer):
    peer.plan({"do": "status", "status": 400}, {"do": "ok"})
    provider = get_provider(f"openai-compatible:m@{peer.base_url}", retries=3, backoff=0.01)
    with pytest.raises(ProviderError) as err:
        await provider.complete(REQUEST)
    await provider.aclose()
    assert err.value.status == 400 and len(peer.requests) == 1


async def test_failure_after_streaming_is_not_retried(peer):
    peer.plan({"do": "error_after", "after": 1, "words": ["once", " twice"]}, {"do": "ok"})
    provider = get_provider(f"openai-compatible:m@{peer.base_url}", retries=3, backoff=0.01)
    texts = []
    with pytest.raises(ProviderError, match="mid-stream"):
        async for delta in provider.stream(REQUEST):
            texts.append(delta.text)
    await provider.aclose()
    assert texts == ["once"] and len(peer.requests) == 1  # nothing streamed twice


async def test_retrying_wrapper_keeps_the_inner_id(peer):
    provider = get_provider(f"openai-compatible:m@{peer.base_url}")
    assert isinstance(provider, RetryingProvider) and provider.id == f"openai-compatible:m@{peer.base_url}"
    await provider.aclose()
