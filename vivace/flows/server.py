"""Flows over HTTP: `GET /v1/flows`, `POST /v1/flows/{name}` as named SSE events, and the flow pages.

Each event is `event: <kind>` plus one `data:` line of JSON, so text with newlines (or any
character) arrives intact. A client that hangs up cancels the run, which aborts its engine requests.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from vivace.flows.executor import run_flow
from vivace.flows.model import Flow, FlowError
from vivace.flows.pool import ProviderPool
from vivace.providers.local import LocalProvider
from vivace.server.errors import APIError, as_api_error
from vivace.server.json_body import InvalidJSONBody, load_json
from vivace.server.state import ServerState
from vivace.server.streaming import SSEResponse

WEB_DIR = Path(__file__).parent / "web"
_NO_CACHE = {"Cache-Control": "no-cache"}


def named_sse(kind: str, payload: dict[str, Any]) -> bytes:
    """One named SSE event with a one-line JSON payload."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def flow_events(flow: Flow, inputs: dict[str, Any], pool: ProviderPool) -> AsyncIterator[bytes]:
    """A run's events as SSE bytes; an unexpected failure ends the stream with an `error` event."""
    try:
        async with aclosing(run_flow(flow, inputs, pool)) as events:
            async for event in events:
                yield named_sse(event.kind, event.to_dict())
    except Exception as e:  # headers are sent: the error travels as the last event
        yield named_sse("error", as_api_error(e).body())


def _inputs(body: Any) -> dict[str, str]:
    if not isinstance(body, dict) or set(body) - {"inputs"}:
        raise APIError(400, 'the body must be {"inputs": {"name": "value", ...}}', "inputs", "invalid_value")
    inputs = body.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise APIError(400, "'inputs' must be an object of input name -> value", "inputs", "invalid_value")
    bad = [k for k, v in inputs.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
    if bad:
        raise APIError(400, f"input {bad[0]!r} must be a string or number", "inputs", "invalid_value")
    return {k: str(v) for k, v in inputs.items()}


def flows_router(flows: dict[str, Flow], pool: ProviderPool, state: ServerState) -> APIRouter:
    """The flow API routes (mount under /v1, behind the API key check).

    A run is one admitted request, like a completion: it counts one unit per step against --max-queue, is refused
    while the server drains, and a drain waits for it (its steps are aborted at the deadline).
    """
    router = APIRouter()

    @router.get("/flows")
    async def list_flows() -> dict[str, Any]:
        return {"object": "list", "data": [flow.describe() for flow in flows.values()]}

    @router.post("/flows/{name}")
    async def run(name: str, request: Request) -> Response:
        flow = flows.get(name)
        if flow is None:
            raise APIError(
                404, f"flow {name!r} not found; this server has {', '.join(flows) or 'no flows'}", code="flow_not_found"
            )
        try:
            body = load_json(await request.body() or b"{}")
        except InvalidJSONBody as e:
            raise APIError(400, f"the body is not valid JSON: {e}", e.param, "invalid_json") from None
        inputs = _inputs(body)
        try:
            flow.resolve_inputs(inputs)
        except FlowError as e:
            raise APIError(400, str(e), "inputs", "invalid_value") from None
        units = len(flow.steps)  # at least one model call per step (for_each items beyond that are capped)
        state.admit(units)
        return SSEResponse(flow_events(flow, inputs, pool), on_close=functools.partial(state.release, units))

    return router


def install_flows(app: FastAPI, v1: APIRouter, flows: dict[str, Flow], state: ServerState) -> None:
    """Serve `flows` on `app`: API routes on `v1`, pages at /flows/{name}; `local:` is the app's own engine."""
    pool = ProviderPool({"local:": LocalProvider(state.engine)})
    v1.include_router(flows_router(flows, pool, state))
    app.router.add_event_handler("shutdown", pool.aclose)

    @app.get("/flows/{name}", include_in_schema=False)
    async def page(name: str) -> FileResponse:
        if name not in flows:
            raise APIError(
                404, f"flow {name!r} not found; this server has {', '.join(flows) or 'no flows'}", code="flow_not_found"
            )
        return FileResponse(WEB_DIR / "flow.html", media_type="text/html", headers=_NO_CACHE)

    app.mount("/flows-static", StaticFiles(directory=WEB_DIR), name="flows-static")
