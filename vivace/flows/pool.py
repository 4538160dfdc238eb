"""The providers a flow run uses, by id: given ones first, the rest built on first use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vivace.flows.model import normalize_provider as normalize
from vivace.providers.base import Provider


class ProviderPool:
    """Provider ids -> Providers for flow runs.

    `given` providers (the server's own engine as `local:`) are used as they are and never closed
    here; any other id is built with `factory` (default: `get_provider`) the first time a step
    needs it, off the event loop since loading a model blocks, and closed by `aclose()`.
    """

    def __init__(
        self, given: dict[str, Provider] | None = None, factory: Callable[[str], Provider] | None = None
    ) -> None:
        self._given = {normalize(k): v for k, v in (given or {}).items()}
        self._built: dict[str, Provider] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._factory = factory

    async def get(self, spec: str) -> Provider:
        """The provider for `spec`, building it once; an unknown or unbuildable id raises ValueError/ProviderError."""
        spec = normalize(spec)
        if spec in self._given:
            return self._given[spec]
        lock = self._locks.setdefault(spec, asyncio.Lock())
        async with lock:
            if spec not in self._built:
                factory = self._factory
                if factory is None:
                    from vivace.providers.registry import get_provider

                    factory = get_provider
                self._built[spec] = await asyncio.to_thread(factory, spec)
            return self._built[spec]

    async def aclose(self) -> None:
        """Close the providers this pool built (not the given ones)."""
        built, self._built = list(self._built.values()), {}
        for provider in built:
            await provider.aclose()
