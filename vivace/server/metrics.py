"""Prometheus metrics for the server, named and meant as vLLM's (`vllm:x` is `vivace_x` here), each
labelled with `model_name`: request counts, latency histograms, engine gauges and counters.

Latencies are taken where the server sees the engine's outputs: TTFT from admission to the first
generated token, inter-token latency between a choice's successive tokens (a step that yields k
tokens counts k intervals of dt/k), end-to-end from admission to the last output. Engine numbers
(queue, running, KV usage, prefix-cache queries and hits, preemptions, queue times, speculative
decoding's drafts, proposed and accepted tokens, the session KV tier's hits, misses and bytes, session
pins) come from the
stats the engine thread publishes after each step (`AsyncEngine.stats()`), so a scrape never waits
for the engine.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
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


class _EngineMetrics(Collector):
    """Engine gauges, counters and the queue-time histogram, from the engine's published stats."""

    def __init__(self, engine: AsyncEngine, model_name: str, in_flight: Callable[[], int]) -> None:
        self.engine = engine
        self.model = [model_name]
        self.in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        stats = self.engine.stats()
        gauges = (
            ("vivace_num_requests_waiting", "Requests queued in the engine, not yet scheduled.", stats["num_waiting"]),
            ("vivace_num_requests_running", "Requests in the engine's running batch.", stats["num_running"]),
            (
                "vivace_requests_in_flight",
                "Requests admitted by the server and not yet answered.",
                self.in_flight(),
            ),
            (
                "vivace_kv_cache_usage_perc",
                "Fraction of KV cache blocks held by requests (1 = full).",
                stats["blocks_in_use"] / stats["num_blocks"] if stats["num_blocks"] else 0.0,
            ),
            ("vivace_kv_blocks_in_use", "KV cache blocks held by requests.", stats["blocks_in_use"]),
            ("vivace_kv_blocks_total", "KV cache blocks in the pool.", stats["num_blocks"]),
            (
                "vivace_session_pinned_blocks",
                "KV cache blocks held for sessions (user / session_id) after their last turn.",
                stats.get("session_pinned_blocks", 0),
            ),
        )
        for name, documentation, value in gauges:
            family = GaugeMetricFamily(name, documentation, labels=["model_name"])
            family.add_metric(self.model, value)
            yield family
        counters = (
            (
                "vivace_prefix_cache_queries",
                "Prompt tokens looked up in the prefix cache.",
                stats.get("prefix_cache_queries", 0),
            ),
            (
                "vivace_prefix_cache_hits",
                "Prompt tokens found in the prefix cache (not computed).",
                stats.get("prefix_cache_hits", 0),
            ),
            ("vivace_num_preemptions", "Sequences preempted for lack of KV blocks.", stats.get("preemptions", 0)),
            (
                "vivace_spec_decode_num_drafts",
                "Speculative verifications: steps in which a sequence's proposed tokens were scored.",
                stats.get("spec_decode_num_drafts", 0),
            ),
            (
                "vivace_spec_decode_num_draft_tokens",
                "Tokens proposed by speculative decoding.",
                stats.get("spec_decode_num_draft_tokens", 0),
            ),
            (
                "vivace_spec_decode_num_accepted_tokens",
                "Proposed tokens accepted by verification.",
                stats.get("spec_decode_num_accepted_tokens", 0),
            ),
        )
        if "kv_tier_hits" in stats:  # the session tier is on
            gauges_tier = (
                ("vivace_kv_tier_usage_bytes", "KV bytes the session tier holds.", stats["kv_tier_used_bytes"]),
                (
                    "vivace_kv_tier_capacity_bytes",
                    "KV bytes the session tier can hold.",
                    stats["kv_tier_capacity_bytes"],
                ),
            )
            for name, documentation, value in gauges_tier:
                family = GaugeMetricFamily(name, documentation, labels=["model_name"])
                family.add_metric(self.model, value)
                yield family
            counters += (
                (
                    "vivace_kv_tier_hits",
                    "KV blocks restored from the session tier instead of recomputed.",
                    stats["kv_tier_hits"],
                ),
                (
                    "vivace_kv_tier_misses",
                    "Session-tier lookups past the device's cached prefix that found no block.",
                    stats["kv_tier_misses"],
                ),
                (
                    "vivace_kv_tier_rejected",
                    "Session-tier blocks that failed verification (never served).",
                    stats["kv_tier_rejected"],
                ),
                ("vivace_kv_tier_stored_bytes", "KV bytes written to the session tier.", stats["kv_tier_stored_bytes"]),
                (
                    "vivace_kv_tier_evicted_bytes",
                    "KV bytes dropped from the session tier for room (LRU).",
                    stats["kv_tier_evicted_bytes"],
                ),
            )
        for name, documentation, value in counters:
            family = CounterMetricFamily(name, documentation, labels=["model_name"])
            family.add_metric(self.model, value)
            yield family
        drafts = stats.get("spec_decode_num_drafts", 0)
        family = GaugeMetricFamily(
            "vivace_spec_decode_mean_acceptance_length",
            "Tokens emitted per speculative verification (accepted proposed tokens + 1); 0 before any.",
            labels=["model_name"],
        )
        family.add_metric(self.model, 1 + stats["spec_decode_num_accepted_tokens"] / drafts if drafts else 0.0)
        yield family
        queue = stats.get("queue_time")
        if queue is not None:
            family = HistogramMetricFamily(
                "vivace_request_queue_time_seconds",
                "Seconds a request waited in the engine before its first step.",
                labels=["model_name"],
            )
            buckets = [(_bound(b), c) for b, c in zip(queue.bounds, queue.cumulative, strict=False)]
            family.add_metric(self.model, [*buckets, ("+Inf", queue.count)], sum_value=queue.sum)
            yield family


def _bound(value: float) -> str:
    return repr(float(value))


class ServerMetrics:
    """The server's metrics in their own registry (no process-global state)."""

    def __init__(self, engine: AsyncEngine, model_name: str, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vivace_requests", "Finished HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        model = ["model_name"]
        self.prompt_tokens = Counter(
            "vivace_prompt_tokens", "Prompt tokens of admitted requests.", model, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter("vivace_generation_tokens", "Tokens generated.", model, registry=r).labels(
            model_name
        )
        self.success = Counter(
            "vivace_request_success",
            "Finished choices by finish reason (stop, length, abort, error); a prompt given up before it "
            "finished (client gone, engine failure) counts once as abort.",
            [*model, "finished_reason"],
            registry=r,
        )
        self.model_name = model_name
        self.ttft = Histogram(
            "vivace_time_to_first_token_seconds",
            "Admission to first generated token.",
            model,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.itl = Histogram(
            "vivace_inter_token_latency_seconds",
            "Time between a choice's successive tokens.",
            model,
            buckets=ITL_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.e2e = Histogram(
            "vivace_e2e_request_latency_seconds",
            "Admission to the last output of a prompt.",
            model,
            buckets=E2E_BUCKETS,
            registry=r,
        ).labels(model_name)
        r.register(_EngineMetrics(engine, model_name, in_flight))

    def render(self) -> bytes:
        """The exposition text for GET /metrics."""
        return generate_latest(self.registry)

    async def observe(self, outputs: AsyncIterator[RequestOutput], admitted: float) -> AsyncIterator[RequestOutput]:
        """Pass one prompt's outputs through, recording token counts and latencies; closing it closes `outputs`."""
        last_token_at: dict[int, float] = {}
        seen_tokens: dict[int, int] = {}
        first = True
        finished = False
        async with aclosing(outputs):  # type: ignore[type-var]
            try:
                async for out in outputs:
                    finished = out.finished
                    yield self._record(out, first, admitted, last_token_at, seen_tokens)
                    first = False
            finally:
                if not finished:  # closed early (client gone) or failed: its choices end as aborted
                    self.success.labels(self.model_name, "abort").inc()

    def _record(
        self,
        out: RequestOutput,
        first: bool,
        admitted: float,
        last_token_at: dict[int, float],
        seen_tokens: dict[int, int],
    ) -> RequestOutput:
        """Count one output's new tokens and latencies; `first` = the prompt's first output."""
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
        if out.finished:
            self.e2e.observe(now - admitted)
            for choice in out.outputs:
                self.success.labels(self.model_name, choice.finish_reason or "stop").inc()
        return out


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


ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/classify", "/v1/embeddings", "/v1/models", "/v1/flows")


def _endpoint(path: str) -> str:
    """The route a path belongs to, so label values stay few (`/v1/models/x` -> `/v1/models`, junk -> `other`)."""
    for endpoint in ENDPOINTS:
        if path == endpoint or path.startswith(endpoint + "/"):
            return endpoint
    return "other"
