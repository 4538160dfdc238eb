"""Metrics math on hand-built timelines (answers worked out by hand) and percentiles against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.bench.timelines import level, record_a, record_b, record_failed
from vivace.bench import metrics
from vivace.bench.records import Chunk, RequestRecord


def test_ttft_skips_empty_chunks():
    assert metrics.ttft(record_a()) == 0.25
    assert metrics.ttft(record_b()) == 0.5
    assert metrics.ttft(record_failed()) is None


def test_itl_spreads_a_gap_over_the_tokens_of_its_chunk():
    # gaps 0.35-0.25 = 0.10 over 2 tokens, then 0.55-0.35 = 0.20 over 1 token
    assert metrics.itls(record_a()) == pytest.approx([0.05, 0.05, 0.20])
    assert metrics.itls(record_b()) == pytest.approx([0.5])
    assert metrics.itls(record_failed()) == []


def test_tpot_excludes_the_first_token():
    assert metrics.tpot(record_a()) == pytest.approx((0.60 - 0.25) / 3)
    assert metrics.tpot(record_b()) == pytest.approx(0.5)
    one_token = RequestRecord(index=0, send=0, end=0.3, output_tokens=1, chunks=[Chunk(0.2, "x", 1)])
    assert metrics.tpot(one_token) is None


def test_e2e_and_per_request_throughput():
    assert metrics.e2e(record_a()) == 0.60
    assert metrics.request_output_throughput(record_a()) == pytest.approx(4 / 0.60)
    assert metrics.request_output_throughput(record_b()) == pytest.approx(2.0)
    assert metrics.e2e(record_failed()) is None


def test_output_tokens_fall_back_to_the_chunk_counts():
    r = record_a()
    r.output_tokens = None
    assert metrics.output_tokens(r) == 0 + 1 + 2 + 1


def test_summary_of_a_level():
    s = metrics.summarize(level())
    assert (s.completed, s.failed) == (2, 1)
    assert (s.input_tokens, s.output_tokens) == (30, 6)  # the failed request's prompt is not counted
    assert s.request_throughput == pytest.approx(2 / 2.0)
    assert s.output_throughput == pytest.approx(6 / 2.0)
    assert s.total_token_throughput == pytest.approx(36 / 2.0)
    assert s.goodput is None
    assert s.ttft.count == 2
    assert s.ttft.mean == pytest.approx(0.375)
    assert s.ttft.p50 == pytest.approx(0.375)
    assert s.ttft.p90 == pytest.approx(0.25 + 0.25 * 0.9)
    assert s.ttft.p99 == pytest.approx(0.25 + 0.25 * 0.99)
    # ITLs pooled over requests: [0.05, 0.05, 0.20, 0.5]
    assert s.itl.count == 4
    assert s.itl.mean == pytest.approx(0.2)
    assert s.itl.p50 == pytest.approx((0.05 + 0.20) / 2)
    assert (s.itl.min, s.itl.max) == (pytest.approx(0.05), pytest.approx(0.5))
    assert s.tpot.mean == pytest.approx(((0.35 / 3) + 0.5) / 2)
    assert s.e2e.max == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("slo", "good"),
    [
        ({"ttft": 0.3}, 1),  # A (0.25) meets it, B (0.5) does not
        ({"tpot": 0.2}, 1),  # A (0.117) meets it, B (0.5) does not
        ({"e2e": 2.0}, 2),
        ({"ttft": 0.6, "e2e": 0.7}, 1),  # every target must hold: B's e2e is 1.0
        ({"ttft": 0.1}, 0),
    ],
)
def test_goodput_counts_requests_meeting_every_slo(slo, good):
    assert metrics.summarize(level(), slo).goodput == pytest.approx(good / 2.0)


def test_unknown_slo_metric_is_an_error():
    with pytest.raises(ValueError, match="unknown SLO metric 'latency'"):
        metrics.summarize(level(), {"latency": 1.0})


def test_empty_level_has_empty_stats():
    from vivace.bench.records import LevelResult

    s = metrics.summarize(LevelResult("concurrency", 1, 0.0, []))
    assert s.completed == 0 and s.ttft.count == 0 and s.ttft.p50 is None and s.output_throughput == 0.0


@given(
    st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=50),
    st.sampled_from([0, 1, 50, 90, 95, 99, 100]),
)
def test_percentile_matches_numpy_linear(values, q):
    assert metrics.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        metrics.percentile([], 50)
