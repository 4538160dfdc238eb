"""Prometheus metrics for the server: request counts, latency histograms, engine gauges, token counters.

Latencies are taken where the server sees the engine's outputs: TTFT from admission to the first
generated token, inter-token latency between a choice's successive tokens (a step that yields k
tokens counts k intervals of dt/k), end-to-end from admission to the last output. Engine gauges
(queue, running, KV blocks, prefix reuse) are read from `AsyncEngine.stats()` at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.outputs import RequestOutput

# Buckets as vLLM's /metrics uses them, so dashboards built for it read ours the same way.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineGauges(Collector):
    """Gauges read from the engine (and the server's admission count) at scrape time."""

    def __init__(self, engine: AsyncEngine, in_flight: Callable[[], int]) -> None:
        self.engine = engine
        self.in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        stats = self.engine.stats()
        reused, computed = stats["prompt_tokens_reused"], stats["prompt_tokens_computed"]
        yield _gauge(
            "vivace_num_requests_waiting", "Requests queued in the engine, not yet scheduled.", stats["num_waiting"]
        )
        yield _gauge("vivace_num_requests_running", "Requests in the engine's running batch.", stats["num_running"])
        yield _gauge(
            "vivace_requests_in_flight", "Requests admitted by the server and not yet answered.", self.in_flight()
        )
        yield _gauge("vivace_kv_blocks_in_use", "KV cache blocks held by requests.", stats["blocks_in_use"])
        yield _gauge("vivace_kv_blocks_total", "KV cache blocks in the pool.", stats["num_blocks"])
        yield _gauge(
            "vivace_prefix_cache_hit_ratio",
            "Share of prompt tokens served from the prefix cache instead of computed.",
            reused / (reused + computed) if reused + computed else 0.0,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class ServerMetrics:
    """The server's metrics in their own registry (no process-global state)."""

    def __init__(self, engine: AsyncEngine, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vivace_requests", "Finished HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("vivace_prompt_tokens", "Prompt tokens of admitted requests.", registry=r)
        self.generation_tokens = Counter("vivace_generation_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram(
            "vivace_time_to_first_token_seconds",
            "Admission to first generated token.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "vivace_inter_token_latency_seconds",
            "Time between a choice's successive tokens.",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "vivace_e2e_request_latency_seconds",
            "Admission to the last output of a prompt.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        r.register(_EngineGauges(engine, in_flight))

    def render(self) -> bytes:
        """The exposition text for GET /metrics."""
        return generate_latest(self.registry)

    async def observe(self, outputs: AsyncIterator[RequestOutput], admitted: float) -> AsyncIterator[RequestOutput]:
        """Pass one prompt's outputs through, recording token counts and latencies; closing it closes `outputs`."""
        last_token_at: dict[int, float] = {}
        seen_tokens: dict[int, int] = {}
        first = True
        async with aclosing(outputs):  # type: ignore[type-var]
            async for out in outputs:
                now = time.perf_counter()
                if first:
                    self.prompt_tokens.inc(len(out.prompt_token_ids))
                for choice in out.outputs:
                    new = len(choice.token_ids) - seen_tokens.get(choice.index, 0)
                    if new <= 0:
                        continue
                    seen_tokens[choice.index] = len(choice.token_ids)
                    self.generation_tokens.inc(new)
                    previous = last_token_at.get(choice.index)
                    if previous is None:
                        self.ttft.observe(now - admitted)
                        new -= 1
                        previous = now
                    for _ in range(new):
                        self.itl.observe((now - previous) / max(new, 1))
                    last_token_at[choice.index] = now
                first = False
                if out.finished:
                    self.e2e.observe(now - admitted)
                yield out


class RequestCounter:
    """ASGI middleware counting finished requests under /v1 by endpoint and response status."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], ServerMetrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics().requests.labels(endpoint=_endpoint(scope["path"]), status=str(status)).inc()


ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/classify", "/v1/models", "/v1/flows")


def _endpoint(path: str) -> str:
    """The route a path belongs to, so label values stay few (`/v1/models/x` -> `/v1/models`, junk -> `other`)."""
    for endpoint in ENDPOINTS:
        if path == endpoint or path.startswith(endpoint + "/"):
            return endpoint
    return "other"
