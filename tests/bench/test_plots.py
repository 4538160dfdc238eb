"""The report's figures: zero-based axes, the load axis to scale, and timelines drawn from the records."""

from __future__ import annotations

import math

import pytest

from tests.bench.timelines import level
from vivace.bench.plots import against_load, distributions, latency_vs_throughput, load_axis, timelines
from vivace.bench.result import BenchResult, level_report


def _result(mode: str, values: list[float]) -> BenchResult:
    result = BenchResult(target="t", workload={}, settings={}, created="now")
    for v in values:
        result.levels.append(level_report(level(mode=mode, value=v), None, None))
    return result


@pytest.mark.parametrize("figure", [against_load, latency_vs_throughput, distributions, timelines])
def test_every_axis_starts_at_zero(figure):
    fig = figure(_result("concurrency", [1, 4, 16]))
    for ax in fig.axes:
        assert ax.get_xlim()[0] == 0, ax.get_title()
        assert ax.get_ylim()[0] <= 0, ax.get_title()


def test_the_load_axis_is_numeric_and_to_scale():
    result = _result("concurrency", [1, 4, 16])
    fig = against_load(result)
    throughput = fig.axes[0].lines[0]
    assert list(throughput.get_xdata()) == [1, 4, 16]  # positions are the concurrencies, not 0, 1, 2
    assert list(throughput.get_ydata()) == [lv.summary.output_throughput for lv in result.levels]
    positions, label, ticks = load_axis(_result("rate", [0.5, 2, math.inf]))
    assert positions == [0.5, 2, 2.5] and label.startswith("request rate")
    assert ticks == ["0.5", "2", "inf (all at once)"]


def test_latency_vs_throughput_has_a_point_per_level():
    result = _result("concurrency", [1, 4])
    ttft = latency_vs_throughput(result).axes[0].lines[0]
    assert list(ttft.get_xdata()) == [lv.summary.output_throughput for lv in result.levels]
    assert list(ttft.get_ydata()) == [lv.summary.ttft.p50 * 1000 for lv in result.levels]


def test_timeline_draws_send_first_and_last_token_of_each_request():
    """Records A (send 0, first content 0.25, last 0.55) and B (send 0.2, 0.5, 1.0) and a failure (0.4 .. 0.45)."""
    fig = timelines(_result("concurrency", [2]))
    segments = {
        (tuple(line.get_xdata()), tuple(line.get_ydata()))
        for line in fig.axes[0].lines
        if line.get_linestyle() == "-" and len(line.get_xdata()) == 2
    }
    expected = {
        ((0.0, 0.25), (0, 0)),  # A waits
        ((0.25, 0.55), (0, 0)),  # A streams
        ((0.2, 0.7), (1, 1)),  # B waits (0.2 + 0.5)
        ((0.7, 1.2), (1, 1)),  # B streams (0.2 + 1.0)
        ((0.4, 0.45), (2, 2)),  # the failure
    }
    rounded = {(tuple(round(x, 9) for x in xs), ys) for xs, ys in segments}
    assert rounded == expected
