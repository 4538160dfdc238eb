"""Scores against target durations, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from tests.bench.timelines import level
from vivace.bench.scores import DEFAULT_TARGETS, score_level, score_value


def test_score_value():
    assert score_value(0.25, 0.5) == 1.0
    assert score_value(0.5, 0.5) == 1.0
    assert score_value(1.0, 0.5) == 0.5
    assert score_value(5.0, 0.5) == pytest.approx(0.1)
    assert score_value(None, 0.5) == 0.0


def test_score_level_averages_over_every_request_failed_ones_scoring_zero():
    scores = score_level(level(), {"ttft": 0.4, "e2e": 0.5})
    # ttft: A 0.25 -> 1, B 0.5 -> 0.8, failed -> 0
    assert scores.metrics["ttft"] == pytest.approx((1 + 0.8 + 0) / 3)
    # e2e: A 0.6 -> 0.5/0.6, B 1.0 -> 0.5, failed -> 0
    assert scores.metrics["e2e"] == pytest.approx((0.5 / 0.6 + 0.5 + 0) / 3)
    assert scores.overall == pytest.approx((scores.metrics["ttft"] + scores.metrics["e2e"]) / 2)


def test_default_targets():
    assert DEFAULT_TARGETS == {"ttft": 0.5, "e2e": 5.0}
    scores = score_level(level())
    assert scores.targets == DEFAULT_TARGETS
    assert scores.metrics == {"ttft": pytest.approx(2 / 3), "e2e": pytest.approx(2 / 3)}


def test_bad_targets_are_errors():
    with pytest.raises(ValueError, match="positive"):
        score_level(level(), {"ttft": 0.0})
    with pytest.raises(ValueError, match="cannot score 'itl'"):
        score_level(level(), {"itl": 0.1})
    with pytest.raises(ValueError, match="no targets"):
        score_level(level(), {})
