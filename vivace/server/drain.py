"""Graceful shutdown: on SIGTERM stop accepting, let in-flight requests finish, abort the rest at a deadline."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import uvicorn

from vivace.server.state import ServerState

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "the server is shutting down and this request did not finish within the drain deadline"


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain phase before its own shutdown.

    uvicorn (on SIGTERM or SIGINT) would wait for open responses without limit, or cancel them at
    `timeout_graceful_shutdown`, cutting streams mid-event. Here the listeners close first, requests
    already admitted get `drain_timeout` seconds to finish, and whatever is left is aborted through
    the engine, so every client still gets a complete answer: a 503 body, or a final SSE error event
    followed by the end of the stream.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.state.draining = True  # a request arriving on an open keep-alive connection gets 503
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + self.drain_timeout
        if self.state.in_flight:
            log.info("draining %d in-flight request(s) for up to %.0f s", self.state.in_flight, self.drain_timeout)
        while self.state.in_flight and time.monotonic() < deadline and not self.force_exit:
            await asyncio.sleep(0.05)
        # Refuse first, so a flow's next step cannot start between the abort and the exit.
        self.state.engine.refuse_new(SHUTDOWN_MESSAGE)
        aborted = await self.state.engine.abort_all(SHUTDOWN_MESSAGE)
        if aborted:
            log.warning("aborted %d request(s) still running at the drain deadline", aborted)
        await super().shutdown(sockets)
