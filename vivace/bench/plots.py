"""Report plots (matplotlib, headless): every axis starts at zero and the load axis is to scale.

Each figure function returns a matplotlib Figure (the tests read its axes); `png` renders one to
base64 so an HTML report needs no other file.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING

from vivace.bench import metrics
from vivace.bench.result import BenchResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_CHUNK_TICKS = 5000  # past this many chunks a timeline draws bars only (ticks would be a smear)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plotting_unavailable() -> str | None:
    """Why plots cannot be drawn here (matplotlib missing or broken), or None when they can."""
    try:
        _plt()
    except ImportError as e:
        return f"the HTML report's plots need matplotlib ({e}); install it with: pip install matplotlib"
    return None


def png(fig: Figure) -> str:
    """The figure as a base64 PNG, and the figure closed."""
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _from_zero(ax) -> None:
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def load_axis(result: BenchResult) -> tuple[list[float], str, list[str]]:
    """Each level's position on a numeric load axis, the axis label and tick labels.

    Concurrency and rate are drawn to scale; a rate of inf (all at once) has no place on a scale, so
    it is drawn at 1.25x the largest finite rate and its tick says so.
    """
    values = [lv.level.value for lv in result.levels]
    mode = result.levels[0].level.mode if result.levels else "concurrency"
    label = "concurrency (requests in flight)" if mode == "concurrency" else "request rate (requests/s)"
    finite = [v for v in values if math.isfinite(v)]
    at_infinity = 1.25 * max(finite) if finite else 1.0
    positions = [v if math.isfinite(v) else at_infinity for v in values]
    ticks = [f"{v:g}" if math.isfinite(v) else "inf (all at once)" for v in values]
    return positions, label, ticks


def against_load(result: BenchResult) -> Figure:
    """Output tokens/s, and TTFT and E2E medians and p99, against the load."""
    plt = _plt()
    x, xlabel, ticks = load_axis(result)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.6))
    left.plot(x, [lv.summary.output_throughput for lv in result.levels], marker="o")
    left.set_title("output throughput (tok/s)")
    for ax, title, attr, scale in ((middle, "TTFT (ms)", "ttft", 1000), (right, "E2E latency (s)", "e2e", 1)):
        for name in ("p50", "p99"):
            values = [getattr(getattr(lv.summary, attr), name) for lv in result.levels]
            ax.plot(x, [v * scale if v is not None else math.nan for v in values], marker="o", label=name)
        ax.set_title(title)
        ax.legend(fontsize="small")
    for ax in (left, middle, right):
        ax.set_xlabel(xlabel)
        if any(t.startswith("inf") for t in ticks):
            ax.set_xticks(x, ticks)
        _from_zero(ax)
    return fig


def latency_vs_throughput(result: BenchResult) -> Figure:
    """Median TTFT and E2E against output throughput, one point per level (labelled): the serving curve."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    throughput = [lv.summary.output_throughput for lv in result.levels]
    for ax, title, attr, scale in ((axes[0], "median TTFT (ms)", "ttft", 1000), (axes[1], "median E2E (s)", "e2e", 1)):
        ys = [getattr(lv.summary, attr).p50 for lv in result.levels]
        ys = [y * scale if y is not None else math.nan for y in ys]
        ax.plot(throughput, ys, marker="o")
        for lv, x, y in zip(result.levels, throughput, ys, strict=True):
            ax.annotate(lv.level.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
        ax.set_title(title)
        ax.set_xlabel("output throughput (tok/s)")
        _from_zero(ax)
    return fig


def distributions(result: BenchResult) -> Figure:
    """Cumulative distributions of TTFT, ITL and E2E, one line per level (lines do not hide each other)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    series = {
        "TTFT (ms)": lambda recs: [metrics.ttft(r) for r in recs],
        "ITL (ms)": lambda recs: [x for r in recs for x in metrics.itls(r)],
        "E2E latency (ms)": lambda recs: [metrics.e2e(r) for r in recs],
    }
    for ax, (title, values_of) in zip(axes, series.items(), strict=True):
        for lv in result.levels:
            values = sorted(v * 1000 for v in values_of(lv.level.records) if v is not None)
            if values:
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, fractions, where="post", label=lv.level.label)
        ax.set_title(title)
        ax.set_ylabel("fraction of " + ("tokens" if "ITL" in title else "requests"))
        _from_zero(ax)
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize="small")
    return fig


def timelines(result: BenchResult) -> Figure:
    """Every request of every level as a line: sent (left end), waiting (thin grey), first token (dot),
    streaming (thick) to its last chunk, each chunk a tick; failures red from send to the error."""
    plt = _plt()
    levels = result.levels or []
    height = sum(1.6 + min(0.12 * len(lv.level.records), 6.0) for lv in levels)  # taller levels, up to a cap
    fig, axes = plt.subplots(len(levels), 1, figsize=(13, height))
    axes = [axes] if len(levels) == 1 else list(axes)
    ticks = sum(len(r.chunks) for lv in levels for r in lv.level.records) <= MAX_CHUNK_TICKS
    for ax, lv in zip(axes, levels, strict=True):
        for row, r in enumerate(sorted(lv.level.records, key=lambda r: r.send)):
            end = r.send + (r.end or 0.0)
            if not r.ok:
                ax.plot([r.send, end], [row, row], color="#c0392b", linewidth=2)
                ax.plot([end], [row], marker="x", color="#c0392b")
                continue
            content = [c for c in r.chunks if c.text]
            first = r.send + content[0].t if content else end
            last = r.send + content[-1].t if content else end
            ax.plot([r.send, first], [row, row], color="#999", linewidth=1)
            ax.plot([first, last], [row, row], color="#2a6fdb", linewidth=3, solid_capstyle="butt")
            ax.plot([first], [row], marker="o", markersize=3, color="#1b4a94")
            if ticks:
                ax.plot([r.send + c.t for c in content], [row] * len(content), "|", color="#0b2a5c", markersize=4)
        ax.set_title(f"{lv.level.label}: each request from send to its last token", fontsize="small", loc="left")
        ax.set_ylabel("request")
        ax.set_xlabel("seconds from the level's start")
        _from_zero(ax)
        ax.set_ylim(-1, max(len(lv.level.records), 1))
    fig.tight_layout()
    return fig
