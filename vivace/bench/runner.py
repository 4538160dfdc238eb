"""Runs a whole benchmark: warm-up, then each load level in turn, summarised and scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from vivace.bench.environment import run_environment
from vivace.bench.load import Load, OnDone, run_level, warm_up
from vivace.bench.result import BenchResult, level_report
from vivace.bench.workloads import WorkItem
from vivace.engine.tokenizer import Tokenizer
from vivace.providers.base import Provider

OnLevel = Callable[[Load], None]


async def run_benchmark(
    provider: Provider,
    items: list[WorkItem],
    loads: list[Load],
    *,
    workload: dict[str, Any],
    warmup: int = 0,
    tokenizer: Tokenizer | None = None,
    slo: dict[str, float] | None = None,
    targets: dict[str, float] | None = None,
    on_level: OnLevel | None = None,
    on_done: OnDone | None = None,
) -> BenchResult:
    """Warm up (not recorded), then run every load level over `items` and summarise each."""
    if not loads:
        raise ValueError("no load levels to run")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    await warm_up(provider, items, warmup, loads[0].concurrency or 1)
    settings = {"warmup": warmup, "slo": slo, "targets": targets, "loads": [asdict(load) for load in loads]}
    result = BenchResult(
        target=provider.id, workload=workload, settings=settings, created=created, environment=run_environment(provider)
    )
    for load in loads:
        if on_level is not None:
            on_level(load)
        level = await run_level(provider, items, load, tokenizer, on_done)
        result.levels.append(level_report(level, slo, targets))
    return result
