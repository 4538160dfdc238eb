"""EngineReplica: one Ray Serve replica holding one engine and the single-process server's FastAPI app.

The replica runs every forwarded request through that app in-process (forwarding.serve_asgi), so the
API, its validation, SSE streaming, admission, metrics and disconnect handling are the very code
`vivace serve` runs without Ray; only the socket is Ray Serve's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from starlette.types import Message

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import EngineConfig
from vivace.ray_serve.forwarding import ForwardedRequest, serve_asgi
from vivace.server.drain import SHUTDOWN_MESSAGE

REPLICA_HEADER = b"x-vivace-replica"


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica builds: the engine's config and the app's settings (as `vivace serve` takes them)."""

    model: str | None
    model_name: str
    engine_options: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    max_queue: int | None = None
    flows_dir: str | None = None
    allowed_origins: tuple[str, ...] = ()


class EngineReplica:
    """The Ray Serve deployment class: `handle` streams a forwarded request's ASGI messages."""

    def __init__(self, spec: ReplicaSpec) -> None:
        from vivace.flows.loader import examples_dir, load_flows
        from vivace.server.app import create_app

        flows = load_flows(spec.flows_dir or examples_dir())
        # Built on the thread that steps it (see AsyncEngine.from_config); the replica's event loop
        # stays free for HTTP work.
        self.engine = AsyncEngine.from_config(EngineConfig(model=spec.model, **spec.engine_options))
        self.app = create_app(
            self.engine,
            spec.model_name,
            api_key=spec.api_key,
            max_queue=spec.max_queue,
            flows=flows,
            allowed_origins=spec.allowed_origins,
        )
        self.state = self.app.state.server
        self.replica_id = serve.get_replica_context().replica_id.unique_id

    async def handle(self, request: ForwardedRequest) -> AsyncIterator[Message]:
        """The app's messages for `request`; the response start names this replica."""
        async for message in serve_asgi(self.app, request, [(REPLICA_HEADER, self.replica_id.encode())]):
            yield message

    def metrics_text(self) -> tuple[str, str]:
        """(this replica's id, its /metrics exposition)."""
        return self.replica_id, self.state.metrics.render().decode()

    def in_flight(self) -> int:
        """Requests this replica's app has admitted and not yet answered."""
        return self.state.in_flight

    async def abort_all(self) -> int:
        """End the drain: refuse new work and abort what still runs (each stream ends with an error event)."""
        self.state.draining = True
        self.engine.refuse_new(SHUTDOWN_MESSAGE)
        return await self.engine.abort_all(SHUTDOWN_MESSAGE)

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose engine loop died is replaced."""
        if self.engine.stopped:
            raise RuntimeError("the engine loop has stopped")

    def __del__(self) -> None:
        self.engine.shutdown()
