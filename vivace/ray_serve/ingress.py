"""Ingress: the Ray Serve deployment that takes HTTP, forwards each request to an engine replica chosen
by the request router, and relays the replica's response (SSE streams as they come).

It reads only what routing needs (the body's prompt and session); everything else is the replica's
app's. It answers itself only /metrics (every replica's, labelled, plus totals) and, while draining,
503 for new requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import RequestCancelledError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from vivace.ray_serve.broadcast import broadcast
from vivace.ray_serve.forwarding import ForwardedRequest, forwarded
from vivace.ray_serve.metrics_merge import merge_metrics
from vivace.server.errors import APIError
from vivace.server.metrics import CONTENT_TYPE
from vivace.server.security import AccessGuard
from vivace.server.streaming import sse

log = logging.getLogger(__name__)

ENGINE_DEPLOYMENT = "EngineReplica"
# A replica that dies before sending anything: the request is sent again, to another replica, this
# many times (nothing reached the client, so nothing is lost or repeated).
RETRIES = 2
REPLICA_DIED = "the replica serving this request stopped before it finished; nothing more will come"
_REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


class Ingress:
    """The Ray Serve ingress deployment class (one replica is enough: it only relays bytes)."""

    def __init__(
        self, engine: DeploymentHandle, app_name: str, api_key: str | None, allowed_origins: tuple[str, ...] = ()
    ) -> None:
        self.engine = engine.options(method_name="handle", stream=True)
        self.app_name = app_name
        self.in_flight = 0
        self.draining = False
        self.metrics_app = AccessGuard(self._metrics, api_key=api_key, allowed_origins=allowed_origins)

    async def __call__(self, request: Request) -> Response:
        if request.url.path == "/metrics":
            return _ASGIResponse(self.metrics_app)
        if self.draining:  # /health too: load balancers stop sending here
            return APIError(503, "the server is shutting down", code="server_shutdown").response()
        body = await request.body()
        client = (request.client.host, request.client.port) if request.client else None
        target = forwarded(
            request.method,
            request.url.path,
            request.scope.get("query_string", b""),
            request.scope["headers"],
            body,
            client,
        )
        self.in_flight += 1
        try:
            start, rest = await self._first_message(target)
        except BaseException:
            self.in_flight -= 1
            raise
        return _RelayedResponse(start, rest, self._done)

    def _done(self) -> None:
        self.in_flight -= 1

    async def _first_message(self, target: ForwardedRequest) -> tuple[Message, DeploymentResponseGenerator]:
        """The replica's response start and the stream of the rest; a replica dying before it sends
        anything gets the request sent again (the router skips the dead replica)."""
        for attempt in range(RETRIES + 1):
            stream: DeploymentResponseGenerator = self.engine.remote(target)
            try:
                return await stream.__anext__(), stream
            except _REPLICA_GONE:
                stream.cancel()
                if attempt == RETRIES:
                    return _error_start(502), _one(APIError(502, REPLICA_DIED, code="replica_died").body())
                log.warning("a replica died before answering; sending the request again (%d)", attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
            except BaseException:
                stream.cancel()
                raise
        raise AssertionError("unreachable")

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        texts = dict(await broadcast(self.app_name, ENGINE_DEPLOYMENT, "metrics_text"))
        await Response(merge_metrics(texts), media_type=CONTENT_TYPE)(scope, receive, send)

    async def drain(self, timeout: float) -> int:
        """Stop admitting, wait up to `timeout` s for in-flight requests, then abort the rest on every
        replica (their streams end with the shutdown error event). Returns the requests aborted."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        aborted = sum(await broadcast(self.app_name, ENGINE_DEPLOYMENT, "abort_all"))
        deadline = time.monotonic() + 5  # the aborted streams' last events reach their clients
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return aborted


def _error_start(status: int) -> Message:
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}


async def _one(body: dict) -> AsyncIterator[Message]:
    yield {"type": "http.response.body", "body": json.dumps(body).encode(), "more_body": False}


class _ASGIResponse(Response):
    """Hands the request to an ASGI app (Ray Serve sends whatever a Response object sends)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        super().__init__()
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class _RelayedResponse(Response):
    """The replica's response, message by message; a replica dying mid-stream ends it with an error event."""

    def __init__(self, start: Message, rest: AsyncIterator[Message], on_close) -> None:  # noqa: ANN001
        super().__init__()
        self.start = start
        self.rest = rest
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = dict(self.start.get("headers", [])).get(b"content-type", b"").startswith(b"text/event-stream")
        try:
            await send(self.start)
            ended = False
            try:
                async for message in self.rest:
                    await send(message)
                    ended = not message.get("more_body", False)
            except (*_REPLICA_GONE, RequestCancelledError):
                log.warning("a replica died mid-response")
            if not ended:  # headers are sent: the error travels as the last event
                tail = sse(APIError(502, REPLICA_DIED, code="replica_died").body()) if streaming else b""
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            if isinstance(self.rest, DeploymentResponseGenerator):
                self.rest.cancel()  # the client went away (or we did): the replica aborts its requests
            self.on_close()
