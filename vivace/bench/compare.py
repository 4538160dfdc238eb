"""`vivace bench compare`: a leaderboard across JSON reports, fastest first by TTFT, tokens/s and total time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vivace.bench.report_json import read_json
from vivace.bench.result import BenchResult, LevelReport

RANKINGS = ("ttft", "tokens_per_s", "total_time")


class CompareError(ValueError):
    """Reports that cannot be compared (too few, or without the asked-for level)."""


@dataclass
class Entry:
    """One report's numbers at the compared load level."""

    name: str  # the report's file name
    target: str
    level: str
    ttft_p50: float | None
    tokens_per_s: float
    total_time: float
    failed: int
    score: float


def _pick(result: BenchResult, level: str | None, name: str) -> LevelReport:
    if not result.levels:
        raise CompareError(f"{name}: the report has no load levels")
    if level is None:
        return result.levels[0]
    for lv in result.levels:
        if lv.level.label == level:
            return lv
    labels = ", ".join(lv.level.label for lv in result.levels)
    raise CompareError(f"{name}: no level {level!r}; it has {labels}")


def entry(result: BenchResult, name: str, level: str | None = None) -> Entry:
    """The compared numbers of one result at `level` (a label like 'c=4'; None: its first level)."""
    lv = _pick(result, level, name)
    s = lv.summary
    return Entry(
        name=name,
        target=result.target,
        level=lv.level.label,
        ttft_p50=s.ttft.p50,
        tokens_per_s=s.output_throughput,
        total_time=s.duration,
        failed=s.failed,
        score=lv.scores.overall,
    )


def ranked(entries: list[Entry], by: str) -> list[Entry]:
    """Entries fastest first by `by`: lowest TTFT p50, highest tokens/s, or lowest total time."""
    if by == "ttft":
        return sorted(entries, key=lambda e: (e.ttft_p50 is None, e.ttft_p50 or 0.0))
    if by == "tokens_per_s":
        return sorted(entries, key=lambda e: -e.tokens_per_s)
    if by == "total_time":
        return sorted(entries, key=lambda e: e.total_time)
    raise CompareError(f"unknown ranking {by!r}; choose one of {', '.join(RANKINGS)}")


def load_entries(paths: list[str | Path], level: str | None = None) -> list[Entry]:
    """Read every report and take its numbers at `level`."""
    if len(paths) < 1:
        raise CompareError("give at least one JSON report to compare")
    return [entry(read_json(p), Path(p).name, level) for p in paths]


def print_leaderboard(entries: list[Entry], console: Console | None = None) -> None:
    """Three leaderboards: by TTFT, by output tokens/s, by total time."""
    console = console or Console()
    titles = {
        "ttft": "fastest first token (TTFT p50)",
        "tokens_per_s": "most output tokens/s",
        "total_time": "shortest total time",
    }
    for by in RANKINGS:
        table = Table(title=titles[by])
        for column in ("#", "report", "target", "level", "TTFT p50 ms", "out tok/s", "total s", "failed", "score"):
            table.add_column(column, justify="left" if column in ("report", "target", "level") else "right")
        for rank, e in enumerate(ranked(entries, by), 1):
            table.add_row(
                str(rank),
                e.name,
                e.target,
                e.level,
                "-" if e.ttft_p50 is None else f"{e.ttft_p50 * 1000:.1f}",
                f"{e.tokens_per_s:.1f}",
                f"{e.total_time:.2f}",
                str(e.failed),
                f"{e.score:.2f}",
            )
        console.print(table)
