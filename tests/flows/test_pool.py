"""ProviderPool: given providers as they are, others built once on first use and closed with the pool."""

from __future__ import annotations

import asyncio

import pytest

from vivace.flows.pool import ProviderPool
from vivace.providers.registry import UnknownProviderError

REMOTE = "openai-compatible:m@http://127.0.0.1:9/v1"  # built without connecting anywhere


async def test_given_provider_is_used_for_local_and_local_colon(engine):
    from vivace.providers.local import LocalProvider

    local = LocalProvider(engine)
    pool = ProviderPool({"local:": local})
    assert await pool.get("local") is local and await pool.get(" local: ") is local
    await pool.aclose()
    assert engine.stats()["num_blocks"] > 0  # the given provider's engine was not shut down


async def test_other_ids_are_built_once_even_when_asked_concurrently():
    built = []

    def factory(spec):
        from vivace.providers.registry import get_provider

        built.append(spec)
        return get_provider(spec)

    pool = ProviderPool(factory=factory)
    first, second = await asyncio.gather(pool.get(REMOTE), pool.get(REMOTE))
    assert first is second and built == [REMOTE]
    await pool.aclose()
    assert await pool.get(REMOTE) is not first  # closed providers are forgotten


async def test_unknown_ids_raise_the_registry_error():
    with pytest.raises(UnknownProviderError, match="unknown provider 'nope'"):
        await ProviderPool().get("nope:model")
