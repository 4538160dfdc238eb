"""Counters the engine keeps for /metrics that the scheduler cannot: request queue times.

A cumulative histogram updated on the engine thread; `snapshot()` copies it into the stats the
engine publishes after each step, so a reader on another thread never sees it mid-update.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# vLLM's buckets for request_queue_time_seconds (its request-latency buckets).
QUEUE_TIME_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


@dataclass(frozen=True)
class HistogramSnapshot:
    """Upper bounds, cumulative counts per bound (the last one is +Inf, so it is the total), and the sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


@dataclass
class Histogram:
    """Observations counted into fixed buckets (Prometheus semantics: a value goes in the first bound >= it)."""

    bounds: tuple[float, ...] = QUEUE_TIME_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> HistogramSnapshot:
        """An immutable copy with cumulative counts."""
        cumulative, running = [], 0
        for c in self.counts:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self.total)
