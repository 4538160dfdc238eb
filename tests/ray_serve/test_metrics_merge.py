"""Merging the replicas' /metrics into one exposition (vivace/ray_serve/metrics_merge.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vivace.ray_serve.metrics_merge import ALL, merge_metrics


def _replica(hits: int, ttfts: list[float], usage: float) -> str:
    registry = CollectorRegistry()
    Counter("vivace_prefix_cache_hits", "h", ["model_name"], registry=registry).labels("m").inc(hits)
    histogram = Histogram(
        "vivace_time_to_first_token_seconds", "t", ["model_name"], buckets=(0.1, 1.0), registry=registry
    )
    for t in ttfts:
        histogram.labels("m").observe(t)
    Gauge("vivace_kv_cache_usage_perc", "u", ["model_name"], registry=registry).labels("m").set(usage)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_replica_labelled_and_totals_under_all():
    merged = _samples(merge_metrics({"a": _replica(3, [0.05, 0.5], 0.2), "b": _replica(5, [2.0], 0.6)}))

    def value(name: str, replica: str, **labels: str) -> float:
        return merged[(name, tuple(sorted({"model_name": "m", "replica": replica, **labels}.items())))]

    assert value("vivace_prefix_cache_hits_total", "a") == 3
    assert value("vivace_prefix_cache_hits_total", "b") == 5
    assert value("vivace_prefix_cache_hits_total", ALL) == 8
    assert value("vivace_time_to_first_token_seconds_count", ALL) == 3
    assert value("vivace_time_to_first_token_seconds_bucket", ALL, le="0.1") == 1
    assert value("vivace_time_to_first_token_seconds_bucket", ALL, le="1.0") == 2
    assert abs(value("vivace_time_to_first_token_seconds_sum", ALL) - 2.55) < 1e-9
    assert abs(value("vivace_kv_cache_usage_perc", ALL) - 0.4) < 1e-9  # a fraction: the mean
    assert not [k for k in merged if k[0].endswith("_created") and ("replica", ALL) in k[1]]


def test_no_replicas_is_an_empty_exposition():
    assert _samples(merge_metrics({})) == {}
