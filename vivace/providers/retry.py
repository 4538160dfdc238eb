"""Retries with exponential backoff and jitter, only before the first delta is streamed.

A retryable ProviderError (429, 5xx, connection errors: the provider sets `retryable`) raised
before anything reached the caller starts the request again after a delay; `Retry-After` wins over
the computed backoff. Once one delta has been yielded the error propagates, so text is never
streamed twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: delay = min(max_delay, base_delay * 2**attempt) * U(1 - jitter, 1)."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5  # fraction of the delay drawn at random, so clients don't retry in lockstep
    max_retry_after: float = 60.0  # a longer Retry-After is not waited for: the error propagates

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before retry number `attempt` (0-based), or None to give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        return backoff * (rng or random).uniform(1.0 - self.jitter, 1.0)


class RetryingProvider(Provider):
    """Wraps a provider; retries its retryable failures that happen before the first delta."""

    def __init__(self, inner: Provider, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.id = inner.id
        self.attempts = 0  # requests sent to the inner provider, retries included (for tests and stats)

    def __repr__(self) -> str:
        return f"RetryingProvider({self.inner!r}, {self.policy!r})"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """The inner provider's deltas, after as many retries as the policy allows."""
        attempt = 0
        while True:
            started = False
            self.attempts += 1
            try:
                async with aclosing(self.inner.stream(request)) as deltas:
                    async for delta in deltas:
                        started = True
                        yield delta
                return
            except ProviderError as exc:
                wait = None if started or not exc.retryable else self.policy.delay(attempt, exc.retry_after)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    async def aclose(self) -> None:
        """Close the inner provider."""
        await self.inner.aclose()
