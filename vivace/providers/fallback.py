"""An ordered list of providers: the next one is tried when one fails before streaming anything."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError


class AllProvidersFailedError(ProviderError):
    """Every provider of a FallbackProvider failed before streaming; `errors` holds each one's error."""

    def __init__(self, errors: list[tuple[str, ProviderError]]) -> None:
        summary = "; ".join(f"{pid}: {exc}" for pid, exc in errors)
        last = errors[-1][1]
        super().__init__(
            f"all {len(errors)} providers failed: {summary}",
            status=last.status,
            retry_after=last.retry_after,
            retryable=any(e.retryable for _, e in errors),
        )
        self.errors = errors


class FallbackProvider(Provider):
    """Tries providers in order; a ProviderError after the first delta propagates (no duplicated text).

    Also built by `get_provider("a,b,...")`; the id is the comma-joined ids.
    """

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ValueError("FallbackProvider needs at least one provider")
        self.providers = list(providers)
        self.id = ",".join(p.id for p in self.providers)
        self.last_used: Provider | None = None  # the provider that served the latest request

    def __repr__(self) -> str:
        return f"FallbackProvider({self.providers!r})"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas from the first provider that starts streaming."""
        errors: list[tuple[str, ProviderError]] = []
        for provider in self.providers:
            started = False
            try:
                async with aclosing(provider.stream(request)) as deltas:
                    async for delta in deltas:
                        if not started:
                            started = True
                            self.last_used = provider
                        yield delta
                return
            except ProviderError as exc:
                if started:
                    raise
                errors.append((provider.id, exc))
        raise AllProvidersFailedError(errors)

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers:
            await provider.aclose()
