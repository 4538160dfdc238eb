"""Is a change between load levels bigger than each level's own noise? Medians with distribution-free
95% intervals (order statistics and the binomial distribution, no resampling), compared level to level."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vivace.bench import metrics
from vivace.bench.records import RequestRecord
from vivace.bench.result import BenchResult

# Per-request metrics (seconds): a level's requests are its samples.
METRICS: dict[str, Callable[[RequestRecord], float | None]] = {
    "TTFT": metrics.ttft,
    "TPOT": metrics.tpot,
    "E2E": metrics.e2e,
}


@dataclass
class MedianInterval:
    """A sample median and the 95% interval it lies in (None bounds: too few samples to say)."""

    median: float
    low: float | None
    high: float | None


def median_interval(values: Sequence[float]) -> MedianInterval:
    """The median with its exact 95% interval: sorted values at ranks j and n + 1 - j, j the largest rank
    with P(Binomial(n, 1/2) < j) <= 2.5%. Below 6 samples no such rank exists and the bounds are None."""
    xs = sorted(values)
    n = len(xs)
    median = metrics.percentile(xs, 50)
    j, below, total = 0, 0, 2**n  # below = number of outcomes of n fair coins with fewer than j heads
    while j < n and 40 * (below + math.comb(n, j)) <= total:
        below += math.comb(n, j)
        j += 1
    if j < 1:
        return MedianInterval(median, None, None)
    return MedianInterval(median, xs[j - 1], xs[n - j])


@dataclass
class LevelChange:
    """One metric's median from one level to the next, and whether the change is beyond the noise."""

    metric: str
    before: str  # level labels
    after: str
    ratio: float  # after / before medians
    beyond_noise: bool | None  # None: too few samples to tell

    def sentence(self) -> str:
        """'TTFT median c=1 -> c=4: x3.10, beyond the noise (95% intervals apart)'."""
        verdict = {
            True: "beyond the noise (95% intervals apart)",
            False: "within the noise (95% intervals overlap)",
            None: "too few requests to tell",
        }[self.beyond_noise]
        return f"{self.metric} median {self.before} -> {self.after}: x{self.ratio:.2f}, {verdict}"


def level_changes(result: BenchResult) -> list[LevelChange]:
    """Each metric's change between consecutive levels."""
    changes = []
    for name, of in METRICS.items():
        previous = None
        for lv in result.levels:
            values = [v for v in (of(r) for r in lv.level.records if r.ok) if v is not None]
            current = (lv.level.label, median_interval(values)) if values else None
            if previous is not None and current is not None:
                (label_a, a), (label_b, b) = previous, current
                beyond = None
                if None not in (a.low, a.high, b.low, b.high):
                    beyond = b.low > a.high or b.high < a.low  # type: ignore[operator]
                ratio = b.median / a.median if a.median > 0 else math.inf
                changes.append(LevelChange(name, label_a, label_b, ratio, beyond))
            previous = current
    return changes
