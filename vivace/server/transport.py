"""Limits on connections, below the app: a cap on open connections and deadlines for reading requests.

uvicorn reads a request for as long as the client takes to send it and accepts connections until
the process runs out of file descriptors: a thousand clients sending half a request each hold the
server (and past the descriptor limit, starve `/health`). Here uvicorn's h11 protocol gets:

- a connection cap: past `max_connections` open connections a new one is answered 503 and closed;
- a head deadline: a request's line and headers must arrive within `header_timeout` seconds of the
  connection opening (or of its first byte, on a kept-alive connection), else 408 and close;
- a body deadline: the whole request, body included, within `body_timeout` seconds of its first byte,
  else the connection is closed (the handler sees the client gone: a 499).

Idle kept-alive connections are uvicorn's own (`timeout_keep_alive`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_FULL = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_DESCRIPTORS_KEPT = 64  # for the model files, the log and the engine, beyond the connections


@dataclass(frozen=True)
class TransportLimits:
    """How many connections, and how long a client may take to send one request."""

    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0


def connection_cap(requested: int) -> int:
    """`requested`, lowered to what the process's file-descriptor limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, soft - _DESCRIPTORS_KEPT))


def guarded_protocol(limits: TransportLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `limits` applied; pass it as `uvicorn.Config(http=...)`."""

    class GuardedH11Protocol(H11Protocol):
        _started: float | None = None  # when the request being read began (None: none is being read)
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            full = len(self.connections) >= limits.max_connections
            super().connection_made(transport)
            if full:
                log.warning("refused a connection: %d open (the limit)", limits.max_connections)
                transport.write(_FULL)
                transport.close()
                return
            self._begin()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                if self._started is None and data:
                    self._begin()
            else:  # the request is in: the handler has it all
                self._started = None
                self._cancel()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def _begin(self) -> None:
            self._started = self.loop.time()
            self._arm(limits.header_timeout)

        def _arm(self, delay: float) -> None:
            self._cancel()
            self._timer = self.loop.call_later(delay, self._check)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _check(self) -> None:
            self._timer = None
            state = self.conn.their_state
            if self._started is None or state not in (h11.IDLE, h11.SEND_BODY):
                return
            if state is h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
                return  # a response is still going out; the next request has not started
            limit = limits.header_timeout if state is h11.IDLE else limits.body_timeout
            left = self._started + limit - self.loop.time()
            if left > 0:
                self._arm(left)
                return
            part = "headers" if state is h11.IDLE else "body"
            log.info("closed a connection whose request %s took over %g s", part, limit)
            if state is h11.IDLE:
                self.transport.write(_TIMEOUT)
            self.transport.close()

    return GuardedH11Protocol
