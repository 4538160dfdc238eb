"""One self-contained HTML report: tables, failures and plots embedded as base64 PNG (no external files)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from vivace.bench.noise import level_changes
from vivace.bench.plots import against_load, distributions, latency_vs_throughput, png, timelines
from vivace.bench.report import COLUMNS, UNITS, failures, judge_line, rows
from vivace.bench.result import BenchResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
.failed { color: #b00; }
.note { background: #fff8e0; padding: 6px 10px; border-left: 3px solid #e0b000; }
"""


def _table(header: tuple[str, ...] | list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"


def _percentiles(result: BenchResult) -> str:
    parts = []
    for lv in result.levels:
        s = lv.summary
        body = []
        for name, st, scale in (
            ("TTFT ms", s.ttft, 1000),
            ("TPOT ms", s.tpot, 1000),
            ("ITL ms", s.itl, 1000),
            ("E2E s", s.e2e, 1),
            ("output tok/s per request", s.request_output_throughput, 1),
        ):
            body.append(
                [name] + ["-" if v is None else f"{v * scale:.2f}" for v in (st.mean, st.p50, st.p90, st.p95, st.p99)]
            )
        scores = ", ".join(f"{k} {v:.2f} (target {lv.scores.targets[k]:g} s)" for k, v in lv.scores.metrics.items())
        parts.append(
            f"<h3>{html.escape(lv.level.label)}</h3><p>{s.completed} completed, {s.failed} failed in "
            f"{s.duration:.2f} s; {s.input_tokens} input, {s.output_tokens} output tokens. "
            f"Scores: {html.escape(scores)}; overall {lv.scores.overall:.2f}.</p>"
            + _table(["metric", "mean", "p50", "p90", "p95", "p99"], body)
        )
    return "".join(parts)


def _image(alt: str, figure) -> str:
    return f"<img alt='{alt}' src='data:image/png;base64,{png(figure)}'>"


def _environment(result: BenchResult) -> str:
    """Hardware, packages and engine configuration, as recorded by the run (older reports have none)."""
    env = result.environment
    if not env:
        return "<p>This report records no environment (written by an older vivace).</p>"
    hardware = env.get("hardware") or {}
    software = env.get("software") or {}
    rows = [[k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)] for k, v in hardware.items()]
    rows += [[k, str(v)] for k, v in software.items() if k != "packages"]
    rows += [[name, ver] for name, ver in (software.get("packages") or {}).items()]
    engine = env.get("engine")
    engine_html = (
        "<h3>Engine configuration</h3>" + _table(["setting", "value"], [[k, json.dumps(v)] for k, v in engine.items()])
        if engine
        else ""
    )
    return "<h2>Environment</h2>" + _table(["what", "value"], rows) + engine_html


def _noise_notes(result: BenchResult) -> str:
    changes = level_changes(result)
    if not changes:
        return ""
    items = "".join(f"<li>{html.escape(c.sentence())}</li>" for c in changes)
    beyond = [c for c in changes if c.beyond_noise]
    lead = (
        f"{len(beyond)} of {len(changes)} level-to-level changes are larger than the levels' own noise."
        if beyond
        else "No level-to-level change is larger than the levels' own noise."
    )
    return (
        "<h2>Levels against their noise</h2>"
        f"<p class='note'>{html.escape(lead)} Medians with 95% distribution-free intervals (order statistics); "
        "a change counts when the intervals do not overlap.</p>"
        f"<ul>{items}</ul>"
    )


def html_report(result: BenchResult) -> str:
    """The report as one HTML document with its plots inlined."""
    failed = failures(result)
    failed_html = (
        f"<h2 class='failed'>Failed requests ({len(failed)})</h2>"
        + _table(
            ["level", "request", "status", "error"],
            [[label, str(i), "-" if st is None else str(st), err] for label, i, st, err in failed],
        )
        if failed
        else "<p>No failed requests.</p>"
    )
    judge = ""
    if result.judge:
        judge = f"<h2>Quality</h2><p>{html.escape(judge_line(result.judge))}</p>" + _table(
            ["question", "score", "answer or error"],
            [
                [i["question"], "-" if i["score"] is None else str(i["score"]), i["error"] or i["answer"] or ""]
                for i in result.judge.get("items", [])
            ],
        )
    workload = ", ".join(f"{k}={v}" for k, v in result.workload.items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>vivace bench: {html.escape(result.target)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>vivace bench: {html.escape(result.target)}</h1>"
        f"<p>Run {html.escape(result.created)}; workload: {html.escape(workload)}</p>"
        + _table(COLUMNS, rows(result))
        + f"<p>{html.escape(UNITS)}.</p>"
        + failed_html
        + _noise_notes(result)
        + "<h2>Throughput and latency against load</h2>"
        + _image("throughput and latency against load", against_load(result))
        + "<h2>Latency against throughput</h2>"
        + _image("latency against throughput", latency_vs_throughput(result))
        + "<h2>Latency distributions</h2>"
        + _image("latency distributions", distributions(result))
        + "<h2>Request timelines</h2>"
        + _image("request timelines", timelines(result))
        + judge
        + "<h2>Percentiles</h2>"
        + _percentiles(result)
        + _environment(result)
        + "</body></html>\n"
    )


def write_html(result: BenchResult, path: str | Path) -> None:
    """Write the HTML report."""
    Path(path).write_text(html_report(result), encoding="utf-8")
