"""The HTML report is one self-contained file with its plots; the Markdown and terminal reports list failures."""

from __future__ import annotations

import base64
import re

from rich.console import Console

from tests.bench.timelines import level
from vivace.bench.report import markdown, print_report
from vivace.bench.report_html import html_report
from vivace.bench.result import BenchResult, level_report


def _result() -> BenchResult:
    result = BenchResult(target="local:", workload={"kind": "chat"}, settings={}, created="2026-11-25T00:00:00+00:00")
    for c in (1, 4):
        lv = level(value=c)
        lv.records[2].error = "HTTP 500: <boom> & co"
        result.levels.append(level_report(lv, {"ttft": 0.3}, None))
    return result


def test_html_is_self_contained_with_embedded_plots():
    page = html_report(_result())
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.IGNORECASE)  # nothing fetched from anywhere
    assert not re.search(r"<(script|link)\b", page)
    images = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
    assert [alt for alt, _ in images] == [
        "throughput and latency against load",
        "latency against throughput",
        "latency distributions",
        "request timelines",
    ]
    for _, data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "HTTP 500: &lt;boom&gt; &amp; co" in page  # failures listed, escaped
    assert "<td>c=1</td>" in page and "<td>c=4</td>" in page
    assert "records no environment" in page  # a result without one says so rather than showing nothing


def test_environment_and_noise_notes_are_shown():
    result = _result()
    result.environment = {
        "hardware": {"cpu": "Test CPU <x>", "cpu_count": 2, "gpus": []},
        "software": {"python": "3.11.7", "packages": {"torch": "2.13.0"}},
        "engine": {"max_num_seqs": 64, "kernels": "cpu"},
    }
    page = html_report(result)
    assert "<td>Test CPU &lt;x&gt;</td>" in page and "<td>torch</td><td>2.13.0</td>" in page
    assert "<td>max_num_seqs</td><td>64</td>" in page and "<td>kernels</td><td>&quot;cpu&quot;</td>" in page
    # two requests per level: too few to tell a change from noise, and the report says so
    assert "TTFT median c=1 -&gt; c=4: x1.00, too few requests to tell" in page


def test_markdown_lists_levels_percentiles_and_failures():
    text = markdown(_result())
    assert "| c=1 | 2 | 1 |" in text and "| c=4 | 2 | 1 |" in text
    assert "| TTFT (ms) | 375.00 | 375.00 |" in text
    assert "## Failed requests (2)" in text and "| c=4 | 2 | 500 | HTTP 500: <boom> & co |" in text


def test_terminal_report_lists_failures():
    console = Console(record=True, width=200)
    print_report(_result(), console)
    out = console.export_text()
    assert "2 failed request(s)" in out and "c=1 #2 (HTTP 500): HTTP 500: <boom> & co" in out
    assert "goodput" in out and "0.50" in out  # one of two requests meets ttft <= 0.3 over 2 s
