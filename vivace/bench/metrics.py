"""Serving metrics as pure functions over request timelines, defined as vLLM's benchmark_serving does.

TTFT: send -> first chunk with non-empty content. E2E: send -> end of stream. TPOT: (E2E - TTFT) /
(output tokens - 1). ITL: the gaps between consecutive content chunks, a chunk carrying k tokens
counting as k gaps of gap/k. Per-request output tok/s: output tokens / E2E (LLMPerf). Aggregate
throughputs divide totals by the level's wall time. Goodput: requests/s meeting every SLO target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

from vivace.bench.records import LevelResult, RequestRecord

PERCENTILES = (50, 90, 95, 99)
SLO_METRICS = ("ttft", "tpot", "e2e")


@dataclass
class Stats:
    """Mean and percentiles (linear interpolation, as numpy's default) of one metric."""

    count: int
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """The fields as a plain dict."""
        return asdict(self)


@dataclass
class Summary:
    """Everything reported for one load level."""

    completed: int
    failed: int
    duration: float
    input_tokens: int
    output_tokens: int
    request_throughput: float  # completed requests / s
    output_throughput: float  # output tokens / s, all requests together
    total_token_throughput: float  # (input + output tokens) / s
    goodput: float | None  # requests / s meeting every SLO target (None without targets)
    ttft: Stats
    tpot: Stats
    itl: Stats
    e2e: Stats
    request_output_throughput: Stats  # per-request output tokens / s

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Summary:
        """The inverse of `to_dict`."""
        stats = {k: Stats(**data[k]) for k in ("ttft", "tpot", "itl", "e2e", "request_output_throughput")}
        return cls(**{**data, **stats})


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> Stats:
    """Count, mean, min, max and the reported percentiles of `values`."""
    if not values:
        return Stats(count=0)
    pcts = {f"p{q}": percentile(values, q) for q in PERCENTILES}
    return Stats(count=len(values), mean=sum(values) / len(values), min=min(values), max=max(values), **pcts)


def ttft(record: RequestRecord) -> float | None:
    """Seconds from send to the first chunk with non-empty content; None if failed or empty."""
    if not record.ok:
        return None
    return next((c.t for c in record.chunks if c.text), None)


def e2e(record: RequestRecord) -> float | None:
    """Seconds from send to the end of the stream; None if failed."""
    return record.end if record.ok else None


def output_tokens(record: RequestRecord) -> int:
    """Output tokens: the recorded count (usage), else the sum over chunks."""
    if record.output_tokens is not None:
        return record.output_tokens
    return sum(c.tokens for c in record.chunks)


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first: (e2e - ttft) / (tokens - 1); None below 2 tokens."""
    first, total, n = ttft(record), e2e(record), output_tokens(record)
    if first is None or total is None or n < 2:
        return None
    return (total - first) / (n - 1)


def itls(record: RequestRecord) -> list[float]:
    """Inter-token latencies: each gap between content chunks, spread evenly over the chunk's tokens."""
    if not record.ok:
        return []
    content = [c for c in record.chunks if c.text]
    out: list[float] = []
    for prev, cur in pairwise(content):
        k = max(cur.tokens, 1)
        out.extend([(cur.t - prev.t) / k] * k)
    return out


def request_output_throughput(record: RequestRecord) -> float | None:
    """One request's output tokens / its e2e latency (LLMPerf's per-request throughput)."""
    total = e2e(record)
    if total is None or total <= 0:
        return None
    return output_tokens(record) / total


def meets_slo(record: RequestRecord, slo: dict[str, float]) -> bool:
    """True when a successful request is within every SLO target (seconds); a missing TPOT counts as 0."""
    if not record.ok:
        return False
    for name, target in slo.items():
        if name not in SLO_METRICS:
            raise ValueError(f"unknown SLO metric {name!r}; known: {', '.join(SLO_METRICS)}")
        value = {"ttft": ttft, "tpot": tpot, "e2e": e2e}[name](record)
        if name == "tpot" and value is None:
            value = 0.0
        if value is None or value > target:
            return False
    return True


def summarize(level: LevelResult, slo: dict[str, float] | None = None) -> Summary:
    """All metrics of one level; failed requests count only in `failed`."""
    ok = [r for r in level.records if r.ok]
    duration = level.duration
    input_tokens = sum(r.prompt_tokens or 0 for r in ok)
    out_tokens = sum(output_tokens(r) for r in ok)

    def rate(x: float) -> float:
        return x / duration if duration > 0 else 0.0

    def present(values: list[float | None]) -> list[float]:
        return [v for v in values if v is not None]

    return Summary(
        completed=len(ok),
        failed=len(level.records) - len(ok),
        duration=duration,
        input_tokens=input_tokens,
        output_tokens=out_tokens,
        request_throughput=rate(len(ok)),
        output_throughput=rate(out_tokens),
        total_token_throughput=rate(input_tokens + out_tokens),
        goodput=rate(sum(meets_slo(r, slo) for r in ok)) if slo else None,
        ttft=stats(present([ttft(r) for r in ok])),
        tpot=stats(present([tpot(r) for r in ok])),
        itl=stats([x for r in ok for x in itls(r)]),
        e2e=stats(present([e2e(r) for r in ok])),
        request_output_throughput=stats(present([request_output_throughput(r) for r in ok])),
    )
