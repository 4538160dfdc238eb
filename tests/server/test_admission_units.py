"""Admission arithmetic: units against the limit, and Retry-After from the measured drain rate."""

from __future__ import annotations

import pytest

from vivace.server.admission import DEFAULT_RETRY_AFTER_S, MAX_RETRY_AFTER_S, Admission, AdmissionRefused


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_units_not_requests_fill_the_limit():
    admission = Admission(limit=10)
    admission.admit(8)
    with pytest.raises(AdmissionRefused):
        admission.admit(3)
    admission.admit(2)
    assert (admission.units, admission.requests) == (10, 2)


def test_an_idle_server_admits_a_request_larger_than_the_limit():
    admission = Admission(limit=4)
    admission.admit(16)
    with pytest.raises(AdmissionRefused):
        admission.admit(1)


def test_retry_after_follows_the_drain_rate():
    clock = Clock()
    admission = Admission(limit=20, clock=clock)
    for _ in range(20):
        admission.admit(1)
    for _ in range(10):  # one unit finishes per second for ten seconds
        clock.now += 1
        admission.release(1)
        admission.admit(1)
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit(5)  # 5 units must drain at 1/s: about 5 s
    assert 4 <= refused.value.retry_after <= 6
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit(1)
    assert refused.value.retry_after == 1


def test_slow_drain_gives_a_long_but_bounded_retry_after():
    clock = Clock()
    admission = Admission(limit=100, clock=clock)
    admission.admit(100)
    clock.now += 25
    admission.release(100)
    admission.admit(100)
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit(100)  # 100 units finished in 25 s: 4/s, so 100 more need about 25 s
    assert 24 <= refused.value.retry_after <= 26
    clock.now += 1000  # nothing finished in the window: no rate, the default
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit(100)
    assert refused.value.retry_after == DEFAULT_RETRY_AFTER_S


def test_retry_after_is_capped():
    clock = Clock()
    admission = Admission(limit=1000, clock=clock)
    admission.admit(1000)
    clock.now += 30
    admission.release(1)
    admission.admit(1)
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit(1000)
    assert refused.value.retry_after == MAX_RETRY_AFTER_S


def test_no_finished_work_yet_gives_the_default():
    admission = Admission(limit=1)
    admission.admit(1)
    with pytest.raises(AdmissionRefused) as refused:
        admission.admit(1)
    assert refused.value.retry_after == DEFAULT_RETRY_AFTER_S
