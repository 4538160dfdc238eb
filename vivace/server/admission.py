"""Admission in units of engine work: how many sequences a request puts into the engine.

A completion with 8 prompts and n=4 is 32 sequences, a classification with 5 labels is 5, a chat
completion with n=1 is 1; the server's limit (`--max-queue` beyond the running batch) counts those
units, not HTTP requests. Each request is also capped on its own (prompts, sequences), so no single
body can put more than MAX_SEQUENCES_PER_REQUEST sequences into the engine. A refused client is told
when to come back from the rate at which admitted work has been finishing.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from vivace.engine.config import InvalidParameterError

MAX_PROMPTS = 256  # prompts in one /v1/completions body
MAX_SEQUENCES_PER_REQUEST = 256  # prompts x n (or labels) of one request
DRAIN_WINDOW_S = 30.0  # finished work counted for the drain rate
MAX_RETRY_AFTER_S = 60
DEFAULT_RETRY_AFTER_S = 1  # before anything has finished there is no rate to go by


class AdmissionRefused(Exception):
    """The server is full; `retry_after` is the estimated wait in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    """Units of work in flight against a limit (None = unlimited), and the rate they finish at."""

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.units = 0
        self.requests = 0
        self._clock = clock
        self._finished: deque[tuple[float, int]] = deque()  # (when, units) released in the window
        self._since: float | None = None  # the first admission: the rate's window never reaches before it

    def admit(self, units: int) -> None:
        """Count a request of `units`; raise AdmissionRefused if it does not fit beside what is in flight.

        An idle server admits any request (the per-request caps bound it), so none waits forever.
        """
        if self.limit is not None and self.units and self.units + units > self.limit:
            raise AdmissionRefused(
                f"the server is full ({self.units} of {self.limit} sequences in flight; this request needs "
                f"{units}); retry later",
                self.retry_after(units),
            )
        if self._since is None:
            self._since = self._clock()
        self.units += units
        self.requests += 1

    def release(self, units: int) -> None:
        """A request of `units` has finished (or failed, or its client left)."""
        self.units -= units
        self.requests -= 1
        self._finished.append((self._clock(), units))

    def drain_rate(self) -> float:
        """Units finished per second over the last DRAIN_WINDOW_S (0.0 if none)."""
        now = self._clock()
        while self._finished and self._finished[0][0] < now - DRAIN_WINDOW_S:
            self._finished.popleft()
        if not self._finished or self._since is None:
            return 0.0
        span = max(min(now - self._since, DRAIN_WINDOW_S), 1.0)
        return sum(units for _, units in self._finished) / span

    def retry_after(self, units: int) -> int:
        """Seconds until `units` more would fit, at the recent drain rate; clamped to [1, MAX_RETRY_AFTER_S]."""
        rate = self.drain_rate()
        if rate == 0.0 or self.limit is None:
            return DEFAULT_RETRY_AFTER_S
        excess = self.units + units - self.limit
        return min(max(math.ceil(excess / rate), 1), MAX_RETRY_AFTER_S)


def check_sequences(prompts: int, n: int) -> None:
    """Raise InvalidParameterError naming the field if one request would put too many sequences in the engine."""
    if prompts > MAX_PROMPTS:
        raise InvalidParameterError("prompt", f"at most {MAX_PROMPTS} prompts per request, got {prompts}")
    if prompts * n > MAX_SEQUENCES_PER_REQUEST:
        raise InvalidParameterError(
            "n", f"prompts x n must be at most {MAX_SEQUENCES_PER_REQUEST} per request, got {prompts} x {n}"
        )
