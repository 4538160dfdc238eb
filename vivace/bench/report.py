"""Human-readable reports: the rich terminal table and Markdown, built from the same rows."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from vivace.bench.metrics import Stats
from vivace.bench.result import BenchResult

# latencies in ms except E2E (s); tok/s = output tokens/s of the whole level; goodput in requests/s
COLUMNS = (
    "level",
    "ok",
    "fail",
    "req/s",
    "tok/s",
    "TTFT p50",
    "TTFT p99",
    "TPOT p50",
    "ITL p50",
    "E2E p50",
    "E2E p99",
    "goodput",
    "score",
)
UNITS = "TTFT, TPOT, ITL in ms; E2E in s; tok/s = output tokens/s; req/s and goodput in requests/s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def rows(result: BenchResult) -> list[list[str]]:
    """One row of formatted values per load level, in COLUMNS order."""
    out = []
    for lv in result.levels:
        s = lv.summary
        ttft, tpot, itl, e2e = s.ttft, s.tpot, s.itl, s.e2e
        out.append(
            [
                lv.level.label,
                str(s.completed),
                str(s.failed),
                f"{s.request_throughput:.2f}",
                f"{s.output_throughput:.1f}",
                _ms(ttft.p50),
                _ms(ttft.p99),
                _ms(tpot.p50),
                _ms(itl.p50),
                _s(e2e.p50),
                _s(e2e.p99),
                _s(s.goodput),
                f"{lv.scores.overall:.2f}",
            ]
        )
    return out


def failures(result: BenchResult) -> list[tuple[str, int, int | None, str]]:
    """Every failed request: (level, index, HTTP status, error)."""
    return [
        (lv.level.label, r.index, r.status, r.error or "") for lv in result.levels for r in lv.level.records if not r.ok
    ]


def judge_line(judge: dict) -> str:
    """The judge's verdict in one line: mean score over the questions it scored."""
    total = len(judge.get("items", []))
    if judge.get("mean") is None:
        return f"judge {judge.get('judge')}: no answer scored (0 of {total} questions)"
    return f"judge {judge.get('judge')}: mean score {judge['mean']:.2f} / 10 over {judge.get('scored')} of {total} questions"


def _stats_line(name: str, st: Stats, scale: float, unit: str) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v * scale:.2f}"

    return f"| {name} ({unit}) | {f(st.mean)} | {f(st.p50)} | {f(st.p90)} | {f(st.p95)} | {f(st.p99)} |"


def print_report(result: BenchResult, console: Console | None = None) -> None:
    """The summary table, scores and any failures, on the terminal."""
    console = console or Console()
    table = Table(title=f"vivace bench: {result.target}", caption=UNITS)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "level" else "right")
    for row in rows(result):
        table.add_row(*row)
    console.print(table)
    for lv in result.levels:
        parts = ", ".join(f"{k} {v:.2f} (target {lv.scores.targets[k]:g} s)" for k, v in lv.scores.metrics.items())
        console.print(f"{lv.level.label}: score {lv.scores.overall:.2f} = mean of {parts}", markup=False)
    failed = failures(result)
    if failed:
        console.print(f"[bold red]{len(failed)} failed request(s):[/]")
        for label, index, status, error in failed:
            console.print(f"  {label} #{index} (HTTP {status if status is not None else '-'}): {error}", markup=False)
    if result.judge:
        console.print(judge_line(result.judge), markup=False)


def markdown(result: BenchResult) -> str:
    """The report as Markdown: summary table, per-level percentiles, scores and failures."""
    lines = [
        f"# vivace bench: {result.target}",
        "",
        f"Run {result.created}; workload: " + ", ".join(f"{k}={v}" for k, v in result.workload.items()),
        "",
    ]
    lines += [UNITS + ".", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(result)]
    for lv in result.levels:
        s = lv.summary
        lines += [
            "",
            f"## {lv.level.label}",
            "",
            f"{s.completed} completed, {s.failed} failed in {s.duration:.2f} s; "
            f"{s.input_tokens} input and {s.output_tokens} output tokens; "
            f"{s.output_throughput:.1f} output tok/s, {s.total_token_throughput:.1f} total tok/s.",
            "",
            "| metric | mean | p50 | p90 | p95 | p99 |",
            "|---|---|---|---|---|---|",
            _stats_line("TTFT", s.ttft, 1000, "ms"),
            _stats_line("TPOT", s.tpot, 1000, "ms"),
            _stats_line("ITL", s.itl, 1000, "ms"),
            _stats_line("E2E", s.e2e, 1, "s"),
            _stats_line("output tok/s per request", s.request_output_throughput, 1, "tok/s"),
            "",
            "Scores: "
            + ", ".join(f"{k} {v:.2f} (target {lv.scores.targets[k]:g} s)" for k, v in lv.scores.metrics.items())
            + f"; overall {lv.scores.overall:.2f}.",
        ]
    failed = failures(result)
    if failed:
        lines += [
            "",
            f"## Failed requests ({len(failed)})",
            "",
            "| level | request | status | error |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {label} | {index} | {status if status is not None else '-'} | {error.replace('|', '/')} |"
            for label, index, status, error in failed
        ]
    if result.judge:
        lines += [
            "",
            "## Quality",
            "",
            judge_line(result.judge) + ".",
            "",
            "| question | score | answer or error |",
            "|---|---|---|",
        ]
        lines += [
            f"| {i['question']} | {i['score'] if i['score'] is not None else '-'} | "
            f"{(i['error'] or i['answer'] or '').replace('|', '/').replace(chr(10), ' ')[:200]} |"
            for i in result.judge.get("items", [])
        ]
    return "\n".join(lines) + "\n"
