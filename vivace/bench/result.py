"""A whole benchmark's result: the target, workload, settings and, per load level, records and summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vivace.bench.metrics import Summary, summarize
from vivace.bench.records import LevelResult
from vivace.bench.scores import Scores, score_level


@dataclass
class LevelReport:
    """One level's records with its summary and scores."""

    level: LevelResult
    summary: Summary
    scores: Scores


@dataclass
class BenchResult:
    """Everything a report shows and the JSON file keeps."""

    target: str  # the provider id benchmarked (never carries an API key)
    workload: dict[str, Any]  # how the requests were made (kind, counts, lengths)
    settings: dict[str, Any]  # warm-up, SLO and score targets, load levels
    created: str  # ISO 8601 UTC time the run started
    levels: list[LevelReport] = field(default_factory=list)
    judge: dict[str, Any] | None = None  # optional quality scores beside the speed
    environment: dict[str, Any] | None = None  # hardware, package versions, engine config (environment.py)


def level_report(level: LevelResult, slo: dict[str, float] | None, targets: dict[str, float] | None) -> LevelReport:
    """Summarise and score one level."""
    return LevelReport(level=level, summary=summarize(level, slo), scores=score_level(level, targets))
