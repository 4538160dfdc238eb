"""Scores from 0 to 1: how well a level's requests meet target durations.

A request scores min(1, target / value) on a metric: 1 within the target, 1/2 at twice the target,
1/10 at ten times. A failed request (or one with no value, e.g. no content) scores 0. A metric's
score is the mean over all the level's requests; the overall score is the mean of the metric scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vivace.bench import metrics
from vivace.bench.records import LevelResult, RequestRecord

DEFAULT_TARGETS = {"ttft": 0.5, "e2e": 5.0}  # first token 0.5 s, completion 5 s
_VALUE: dict[str, Callable[[RequestRecord], float | None]] = {
    "ttft": metrics.ttft,
    "e2e": metrics.e2e,
    "tpot": metrics.tpot,
}


@dataclass
class Scores:
    """Per-metric scores, the overall score, and the targets they were scored against (seconds)."""

    targets: dict[str, float]
    metrics: dict[str, float]
    overall: float

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        return {"targets": self.targets, "metrics": self.metrics, "overall": self.overall}


def score_value(value: float | None, target: float) -> float:
    """One value against its target: min(1, target / value); None (no value) scores 0."""
    if target <= 0:
        raise ValueError(f"a target duration must be positive, got {target}")
    if value is None:
        return 0.0
    if value <= target:
        return 1.0
    return target / value


def score_level(level: LevelResult, targets: dict[str, float] | None = None) -> Scores:
    """Score every metric named in `targets` (default: ttft 0.5 s, e2e 5 s) over all requests."""
    targets = dict(DEFAULT_TARGETS if targets is None else targets)
    if not targets:
        raise ValueError("no targets to score against")
    per_metric: dict[str, float] = {}
    for name, target in targets.items():
        if name not in _VALUE:
            raise ValueError(f"cannot score {name!r}; scorable metrics: {', '.join(_VALUE)}")
        values = [_VALUE[name](r) for r in level.records]
        per_metric[name] = sum(score_value(v, target) for v in values) / len(values) if values else 0.0
    return Scores(targets=targets, metrics=per_metric, overall=sum(per_metric.values()) / len(per_metric))
