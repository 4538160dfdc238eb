"""GET /metrics: counters and histograms move by exactly what the requests did; latency math on a fixed clock."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import GREEDY_PROMPT, MODEL
from vivace.engine.engine_stats import QUEUE_TIME_BUCKETS, Histogram
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
    m = {"model_name": MODEL}
    assert delta("vivace_prompt_tokens_total", **m) == sum(u["prompt_tokens"] for u in usages)
    generated = sum(u["completion_tokens"] for u in usages)
    assert delta("vivace_generation_tokens_total", **m) == generated
    assert delta("vivace_time_to_first_token_seconds_count", **m) == 3
    assert delta("vivace_inter_token_latency_seconds_count", **m) == generated - 3
    assert delta("vivace_e2e_request_latency_seconds_count", **m) == 3
    assert (
        delta("vivace_e2e_request_latency_seconds_sum", **m) > delta("vivace_time_to_first_token_seconds_sum", **m) > 0
    )
    # All three ran to max_tokens; the 400 never reached the engine.
    assert delta("vivace_request_success_total", finished_reason="length", **m) == 3
    assert delta("vivace_request_queue_time_seconds_count", **m) == 3
    # The second completion repeats the first's prompt: its full blocks are hits.
    queries = delta("vivace_prefix_cache_queries_total", **m)
    assert queries == sum(u["prompt_tokens"] for u in usages)
    assert delta("vivace_prefix_cache_hits_total", **m) == sum(
        u["prompt_tokens_details"]["cached_tokens"] for u in usages
    )
    stats = server.engine.stats()
    assert _value(after, "vivace_kv_blocks_in_use", **m) == 0
    assert _value(after, "vivace_kv_cache_usage_perc", **m) == 0
    assert _value(after, "vivace_kv_blocks_total", **m) == stats["num_blocks"]
    assert _value(after, "vivace_num_requests_running", **m) == 0
    assert _value(after, "vivace_requests_in_flight", **m) == 0
    assert _value(after, "vivace_num_preemptions_total", **m) == stats["preemptions"]


@pytest.mark.slow
def test_unknown_paths_share_one_label(server):
    for path in ("/v1/nope", "/v1/nope/again"):
        assert httpx.get(server.base_url + path).status_code == 404
    samples = _scrape(server.base_url)
    assert _value(samples, "vivace_requests_total", endpoint="other", status="404") >= 2
    assert not any("nope" in dict(labels).get("endpoint", "") for _, labels in samples)


class _FixedEngine:
    def stats(self) -> dict:
        queue_times = Histogram()
        for seconds in (0.1, 0.4, 0.4, 3.0):
            queue_times.observe(seconds)
        return {
            "num_waiting": 3,
            "num_running": 2,
            "blocks_in_use": 7,
            "num_blocks": 100,
            "prompt_tokens_reused": 30,
            "prompt_tokens_computed": 90,
            "prefix_cache_queries": 120,
            "prefix_cache_hits": 30,
            "preemptions": 4,
            "queue_time": queue_times.snapshot(),
        }


def _output(tokens: int, finished: bool) -> RequestOutput:
    choice = CompletionOutput(0, "", "", list(range(tokens)), "length" if finished else None)
    return RequestOutput("r", None, [1, 2, 3, 4], [choice], finished)


def test_latencies_on_a_hand_built_timeline(monkeypatch):
    # Admitted at t=10. One token at t=11, two more at t=13, the last at t=14.
    # TTFT 1 s; inter-token gaps 1, 1 (2 s over two tokens), 1; end-to-end 4 s.
    clock = iter([11.0, 13.0, 14.0])
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: next(clock))
    metrics = ServerMetrics(_FixedEngine(), "m", lambda: 5)  # type: ignore[arg-type]

    async def outputs():
        for tokens, finished in ((1, False), (3, False), (4, True)):
            yield _output(tokens, finished)

    async def drain() -> int:
        return len([o async for o in metrics.observe(outputs(), admitted=10.0)])

    assert asyncio.run(drain()) == 3
    families = list(text_string_to_metric_families(metrics.render().decode()))
    samples = {s.name: s.value for f in families for s in f.samples if "le" not in s.labels}
    buckets = {
        s.labels["le"]: s.value
        for f in families
        for s in f.samples
        if s.name == "vivace_request_queue_time_seconds_bucket"
    }
    assert all(s.labels.get("model_name") == "m" for f in families for s in f.samples if "requests_total" not in s.name)
    assert samples["vivace_time_to_first_token_seconds_sum"] == 1.0
    assert samples["vivace_inter_token_latency_seconds_count"] == 3
    assert samples["vivace_inter_token_latency_seconds_sum"] == 3.0
    assert samples["vivace_e2e_request_latency_seconds_sum"] == 4.0
    assert samples["vivace_prompt_tokens_total"] == 4
    assert samples["vivace_generation_tokens_total"] == 4
    assert samples["vivace_num_requests_waiting"] == 3
    assert samples["vivace_requests_in_flight"] == 5
    assert samples["vivace_kv_cache_usage_perc"] == 0.07
    assert samples["vivace_prefix_cache_queries_total"] == 120 and samples["vivace_prefix_cache_hits_total"] == 30
    assert samples["vivace_num_preemptions_total"] == 4
    assert samples["vivace_request_success_total"] == 1  # the one prompt, finished by length
    assert samples["vivace_request_queue_time_seconds_count"] == 4
    assert samples["vivace_request_queue_time_seconds_sum"] == pytest.approx(3.9)
    assert (buckets["0.3"], buckets["0.5"], buckets["2.5"], buckets["5.0"], buckets["+Inf"]) == (1, 3, 3, 4, 4)


def test_histogram_buckets_match_prometheus_client_on_random_values():
    import random

    from prometheus_client import CollectorRegistry
    from prometheus_client import Histogram as Reference

    rng = ((random.Random(0).expovariate(0.5)) for _ in range(500))
    values = [round(v, 1) for v in rng]  # rounding puts some exactly on a bound
    ours = Histogram()
    reference = Reference("h", "h", buckets=QUEUE_TIME_BUCKETS, registry=CollectorRegistry())
    for v in values:
        ours.observe(v)
        reference.observe(v)
    expected = [s.value for s in reference.collect()[0].samples if s.name == "h_bucket"]
    snapshot = ours.snapshot()
    assert list(snapshot.cumulative) == expected and snapshot.sum == pytest.approx(sum(values))


@pytest.mark.slow
async def test_metrics_never_waits_for_the_engine_lock_and_stays_live_under_load(server):
    """/metrics answers while the engine lock is held, and tracks 16 running streams while polled."""
    engine = server.engine
    with engine._lock:  # a long engine step in progress: the scrape must not queue behind it
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(server.base_url + "/metrics")).status_code == 200

    body = {"prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": True, "stream": True}

    async def stream(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", server.base_url + "/v1/completions", json=body) as response:
            assert response.status_code == 200
            await response.aread()

    running: list[float] = []

    async def poll(client: httpx.AsyncClient, streams: asyncio.Future) -> None:
        while not streams.done():
            response = await client.get(server.base_url + "/metrics")
            assert response.status_code == 200
            families = {f.name: f for f in text_string_to_metric_families(response.text)}
            running.append(families["vivace_num_requests_running"].samples[0].value)
            usage = families["vivace_kv_cache_usage_perc"].samples[0].value
            assert 0 <= usage <= 1
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=120) as client:
        streams = asyncio.gather(*(stream(client) for _ in range(16)))
        await asyncio.gather(streams, poll(client, streams))
    assert len(running) >= 5 and max(running) > 0  # scrapes saw the batch running, not a frozen snapshot
