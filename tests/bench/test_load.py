"""The load generator against a live server: concurrency caps, request-rate spacing, durations."""

from __future__ import annotations

from itertools import pairwise

import pytest

from vivace.bench.load import Load, LoadError, run_level
from vivace.bench.records import RequestRecord
from vivace.bench.target import open_target
from vivace.bench.workloads import chat_workload

pytestmark = pytest.mark.slow


def max_in_flight(records: list[RequestRecord]) -> int:
    """The most requests whose [send, send + end] intervals overlap at once."""
    events = sorted(
        [(r.send, 1) for r in records] + [(r.send + (r.end or 0), -1) for r in records], key=lambda e: (e[0], e[1])
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


async def test_concurrency_caps_requests_in_flight(live):
    provider = open_target(live.url)
    try:
        level = await run_level(provider, chat_workload(6, max_tokens=3), Load(concurrency=2))
    finally:
        await provider.aclose()
    assert [r.index for r in level.records] == list(range(6))
    assert all(r.ok for r in level.records)
    assert max_in_flight(level.records) == 2
    assert level.duration >= max(r.send + r.end for r in level.records)


async def test_constant_rate_spaces_the_sends(live):
    provider = open_target(live.url)
    try:
        level = await run_level(provider, chat_workload(4, max_tokens=2), Load(rate=10.0, poisson=False))
    finally:
        await provider.aclose()
    sends = [r.send for r in level.records]
    assert all(later - earlier >= 0.1 - 0.005 for earlier, later in pairwise(sends))
    assert level.label == "rate=10/s" and len(level.records) == 4


async def test_duration_stops_sending_and_cycles_the_workload(live):
    provider = open_target(live.url)
    try:
        level = await run_level(provider, chat_workload(1, max_tokens=2), Load(concurrency=1, duration=0.8))
    finally:
        await provider.aclose()
    assert len(level.records) >= 1
    assert all(r.send < 0.8 for r in level.records)
    assert all(r.ok for r in level.records)


def test_bad_loads_are_errors():
    with pytest.raises(LoadError, match="needs a concurrency or a request rate"):
        Load()
    with pytest.raises(LoadError, match="concurrency must be >= 1"):
        Load(concurrency=0)
    with pytest.raises(LoadError, match="request rate must be > 0"):
        Load(rate=0)
