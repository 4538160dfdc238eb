"""GET /metrics: counters and histograms move by exactly what the requests did; latency math on a fixed clock."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import GREEDY_PROMPT, MODEL
from vivace.engine.outputs import CompletionOutput, RequestOutput
from vivace.server import metrics as metrics_module
from vivace.server.metrics import ServerMetrics


def _scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(base_url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
def test_counters_follow_requests(server):
    before = _scrape(server.base_url)
    usages = []
    for max_tokens in (5, 9):
        body = {"model": MODEL, "prompt": GREEDY_PROMPT, "max_tokens": max_tokens, "temperature": 0}
        response = httpx.post(server.base_url + "/v1/completions", json=body, timeout=60)
        assert response.status_code == 200
        usages.append(response.json()["usage"])
    streamed = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=streamed, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    usages.append(httpx.Response(200, content=lines[-1][len("data: ") :]).json()["usage"])
    bad = httpx.post(server.base_url + "/v1/completions", json={"model": MODEL, "prompt": "x", "temperature": -1})
    assert bad.status_code == 400
    after = _scrape(server.base_url)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("vivace_requests_total", endpoint="/v1/completions", status="200") == 2
    assert delta("vivace_requests_total", endpoint="/v1/chat/completions", status="200") == 1
    assert delta("vivace_requests_total", endpoint="/v1/completions", status="400") == 1
    assert delta("vivace_prompt_tokens_total") == sum(u["prompt_tokens"] for u in usages)
    generated = sum(u["completion_tokens"] for u in usages)
    assert delta("vivace_generation_tokens_total") == generated
    assert delta("vivace_time_to_first_token_seconds_count") == 3
    assert delta("vivace_inter_token_latency_seconds_count") == generated - 3
    assert delta("vivace_e2e_request_latency_seconds_count") == 3
    assert delta("vivace_e2e_request_latency_seconds_sum") > delta("vivace_time_to_first_token_seconds_sum") > 0
    stats = server.engine.stats()
    assert _value(after, "vivace_kv_blocks_in_use") == 0
    assert _value(after, "vivace_kv_blocks_total") == stats["num_blocks"]
    assert _value(after, "vivace_num_requests_running") == 0
    assert _value(after, "vivace_requests_in_flight") == 0
    expected_ratio = stats["prompt_tokens_reused"] / (stats["prompt_tokens_reused"] + stats["prompt_tokens_computed"])
    assert _value(after, "vivace_prefix_cache_hit_ratio") == pytest.approx(expected_ratio)


@pytest.mark.slow
def test_unknown_paths_share_one_label(server):
    for path in ("/v1/nope", "/v1/nope/again"):
        assert httpx.get(server.base_url + path).status_code == 404
    samples = _scrape(server.base_url)
    assert _value(samples, "vivace_requests_total", endpoint="other", status="404") >= 2
    assert not any("nope" in dict(labels).get("endpoint", "") for _, labels in samples)


class _FixedEngine:
    def stats(self) -> dict:
        return {
            "num_waiting": 3,
            "num_running": 2,
            "blocks_in_use": 7,
            "num_blocks": 100,
            "prompt_tokens_reused": 30,
            "prompt_tokens_computed": 90,
        }


def _output(tokens: int, finished: bool) -> RequestOutput:
    choice = CompletionOutput(0, "", "", list(range(tokens)), "length" if finished else None)
    return RequestOutput("r", None, [1, 2, 3, 4], [choice], finished)


def test_latencies_on_a_hand_built_timeline(monkeypatch):
    # Admitted at t=10. One token at t=11, two more at t=13, the last at t=14.
    # TTFT 1 s; inter-token gaps 1, 1 (2 s over two tokens), 1; end-to-end 4 s.
    clock = iter([11.0, 13.0, 14.0])
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: next(clock))
    metrics = ServerMetrics(_FixedEngine(), lambda: 5)  # type: ignore[arg-type]

    async def outputs():
        for tokens, finished in ((1, False), (3, False), (4, True)):
            yield _output(tokens, finished)

    async def drain() -> int:
        return len([o async for o in metrics.observe(outputs(), admitted=10.0)])

    assert asyncio.run(drain()) == 3
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
        if not s.labels or "le" not in s.labels
    }
    assert samples["vivace_time_to_first_token_seconds_sum"] == 1.0
    assert samples["vivace_inter_token_latency_seconds_count"] == 3
    assert samples["vivace_inter_token_latency_seconds_sum"] == 3.0
    assert samples["vivace_e2e_request_latency_seconds_sum"] == 4.0
    assert samples["vivace_prompt_tokens_total"] == 4
    assert samples["vivace_generation_tokens_total"] == 4
    assert samples["vivace_num_requests_waiting"] == 3
    assert samples["vivace_requests_in_flight"] == 5
    assert samples["vivace_prefix_cache_hit_ratio"] == 0.25
