"""Medians' 95% intervals cover the true median as often as they claim; level changes judged against them."""

from __future__ import annotations

import random

from vivace.bench.noise import level_changes, median_interval
from vivace.bench.records import Chunk, LevelResult, RequestRecord
from vivace.bench.result import BenchResult, level_report


def test_interval_ranks_match_the_published_table():
    """Ranks of the 95% interval for the median (e.g. Conover, Practical Nonparametric Statistics)."""
    for n, (low, high) in {6: (1, 6), 10: (2, 9), 20: (6, 15), 100: (40, 61)}.items():
        interval = median_interval([float(i) for i in range(1, n + 1)])
        assert (interval.low, interval.high) == (low, high), n
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]).low is None  # 5 samples cannot give 95%


def test_intervals_cover_a_known_median_at_least_95_percent_of_the_time():
    rng = random.Random(0)
    for n in (8, 25, 60):
        trials, covered = 2000, 0
        for _ in range(trials):
            interval = median_interval([rng.expovariate(1.0) for _ in range(n)])
            covered += interval.low <= 0.6931471805599453 <= interval.high  # ln 2, the exponential's median
        assert covered / trials >= 0.94, (n, covered / trials)


def _level(value: int, ttfts: list[float]) -> LevelResult:
    records = [
        RequestRecord(
            index=i, send=0.0, end=t + 0.5, output_tokens=2, chunks=[Chunk(t, "a", 1), Chunk(t + 0.5, "b", 1)]
        )
        for i, t in enumerate(ttfts)
    ]
    return LevelResult(mode="concurrency", value=value, duration=10.0, records=records)


def test_a_real_change_is_beyond_the_noise_and_a_reshuffle_is_not():
    rng = random.Random(1)
    base = [rng.uniform(0.1, 0.2) for _ in range(30)]
    result = BenchResult(target="t", workload={}, settings={}, created="now")
    for value, ttfts in ((1, base), (2, rng.sample(base, len(base))), (4, [t * 3 for t in base])):
        result.levels.append(level_report(_level(value, ttfts), None, None))
    ttft = [c for c in level_changes(result) if c.metric == "TTFT"]
    assert [(c.before, c.after, c.beyond_noise) for c in ttft] == [("c=1", "c=2", False), ("c=2", "c=4", True)]
    assert abs(ttft[1].ratio - 3) < 1e-9
    assert "x3.00, beyond the noise" in ttft[1].sentence()
