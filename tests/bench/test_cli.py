"""`vivace bench run` against a live vivace server: its counts and token totals match the server's /metrics."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.bench.conftest import MODEL
from vivace.bench.plots import timelines
from vivace.bench.report_json import read_json
from vivace.cli import app

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics, keyed by (sample name, sorted labels)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def run(*args: str) -> str:
    out = CliRunner().invoke(app, ["bench", "run", *args], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    return out.output


def test_bench_run_matches_the_servers_metrics(live, tmp_path):
    json_path, html_path, md_path = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"
    before = scrape(live.url)
    output = run(
        live.url,
        "--workload",
        "random",
        "--input-len",
        "12",
        "--output-len",
        "6",
        "-n",
        "3",
        "-c",
        "1,2",
        "--warmup",
        "1",
        "--json",
        str(json_path),
        "--html",
        str(html_path),
        "--markdown",
        str(md_path),
    )
    after = scrape(live.url)
    result = read_json(json_path)
    assert result.target == f"openai-compatible:{MODEL}@{live.url}/v1"
    assert [lv.level.label for lv in result.levels] == ["c=1", "c=2"]
    records = [r for lv in result.levels for r in lv.level.records]
    assert len(records) == 6 and all(r.ok for r in records)
    # exact prompt lengths, EOS ignored: the server's usage says 12 in, 6 out for every request
    assert {(r.prompt_tokens, r.output_tokens, r.finish_reason) for r in records} == {(12, 6, "length")}
    assert all(sum(c.tokens for c in r.chunks) == 6 and len(r.chunks) >= 2 for r in records)
    warm = 1  # the warm-up request reaches the server but not the report
    ok = delta(before, after, "vivace_requests_total", endpoint="/v1/completions", status="200")
    assert ok == len(records) + warm
    assert (
        delta(before, after, "vivace_prompt_tokens_total", model_name=MODEL)
        == sum(r.prompt_tokens for r in records) + 12 * warm
    )
    assert (
        delta(before, after, "vivace_generation_tokens_total", model_name=MODEL)
        == sum(r.output_tokens for r in records) + 6 * warm
    )
    assert delta(before, after, "vivace_time_to_first_token_seconds_count", model_name=MODEL) == len(records) + warm
    for lv in result.levels:
        assert lv.summary.completed == 3 and lv.summary.output_tokens == 18 and lv.summary.input_tokens == 36
        assert lv.summary.ttft.p50 is not None and lv.summary.itl.count == 3 * 5
    assert "c=1" in output and "c=2" in output and "TTFT p50" in output
    assert "| c=2 | 3 | 0 |" in md_path.read_text()
    # The run's machine and packages are in the JSON and on the page.
    env = result.environment
    assert env["software"]["packages"]["vivace"] == version("vivace")
    assert env["software"]["packages"]["httpx"] == version("httpx")
    assert env["hardware"]["cpu_count"] == os.cpu_count() and env["engine"] is None  # a remote target
    page = html_path.read_text()
    assert f"<td>httpx</td><td>{version('httpx')}</td>" in page
    assert page.count("data:image/png;base64,") == 4 and "Levels against their noise" in page
    # The timeline is drawn from the JSON's records: each request's send, first and last token.
    fig = timelines(result)
    drawn = {
        tuple(round(x, 9) for x in line.get_xdata())
        for ax in fig.axes
        for line in ax.lines
        if line.get_linestyle() == "-" and len(line.get_xdata()) == 2
    }
    for r in records:
        send, first, last = r.send, r.send + r.chunks[0].t, r.send + r.chunks[-1].t
        assert (round(send, 9), round(first, 9)) in drawn and (round(first, 9), round(last, 9)) in drawn


def test_html_without_matplotlib_fails_before_the_run(live, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    before = scrape(live.url)
    out = CliRunner().invoke(
        app, ["bench", "run", live.url, "-n", "2", "--html", str(tmp_path / "r.html")], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 2 and "pip install matplotlib" in out.output
    after = scrape(live.url)
    assert delta(before, after, "vivace_requests_total", endpoint="/v1/completions", status="200") == 0
    assert delta(before, after, "vivace_requests_total", endpoint="/v1/chat/completions", status="200") == 0
    assert not (tmp_path / "r.html").exists()


def test_failed_requests_are_counted_and_listed(live, tmp_path):
    json_path = tmp_path / "r.json"
    before = scrape(live.url)
    output = run(
        f"openai-compatible:no-such-model@{live.url}/v1",
        "-n",
        "2",
        "--warmup",
        "0",
        "--max-tokens",
        "4",
        "--json",
        str(json_path),
    )
    after = scrape(live.url)
    result = read_json(json_path)
    (level,) = result.levels
    assert level.summary.failed == 2 and level.summary.completed == 0
    assert [(r.index, r.status) for r in level.level.records] == [(0, 404), (1, 404)]
    assert all("no-such-model" in (r.error or "") for r in level.level.records)
    assert delta(before, after, "vivace_requests_total", endpoint="/v1/chat/completions", status="404") == 2
    assert "2 failed request(s)" in output and "#1 (HTTP 404)" in output
    assert level.scores.overall == 0.0


def test_unreachable_base_url_is_a_clear_error():
    out = CliRunner().invoke(app, ["bench", "run", "http://127.0.0.1:9", "-n", "1"], env={"COLUMNS": "200"})
    assert out.exit_code == 2
    assert "cannot reach http://127.0.0.1:9/v1/models" in out.output


def test_a_local_model_that_cannot_load_is_a_clear_error():
    out = CliRunner().invoke(app, ["bench", "run", "local:/nonexistent/model.gguf", "-n", "1"], env={"COLUMNS": "200"})
    assert out.exit_code == 2, out.output
    assert "model path /nonexistent/model.gguf does not exist" in out.output and "Traceback" not in out.output
