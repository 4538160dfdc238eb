"""The OpenAI-compatible HTTP API over one AsyncEngine."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import SamplingParams
from vivace.flows.model import Flow
from vivace.flows.server import install_flows
from vivace.server.admission import check_sequences
from vivace.server.classify import classify as classify_labels
from vivace.server.classify import classify_task
from vivace.server.embeddings import install_embeddings
from vivace.server.errors import APIError, install_handlers, parse_body
from vivace.server.lora_routes import install_lora_routes, lora_cards
from vivace.server.metrics import CONTENT_TYPE, RequestCounter
from vivace.server.protocol import ChatCompletionRequest, ClassifyRequest, CompletionRequest
from vivace.server.security import AccessGuard
from vivace.server.shapes import CHAT, TEXT, ResponseMeta, full_body
from vivace.server.state import ServerState
from vivace.server.streaming import SSEResponse, collect, sse_events, start
from vivace.server.tokenize_routes import install_tokenize_routes
from vivace.server.tolerant import IgnoredFieldsHeader
from vivace.server.tool_calls import constrained, plan_tools
from vivace.server.ui import mount_ui

DEFAULT_MAX_BODY_BYTES = 1 << 20

T = TypeVar("T")


class BodyLimit:
    """Reject request bodies over `max_bytes` with 413, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = APIError(413, f"request body exceeds {self.max_bytes:,} bytes", code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await too_large.response()(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, limited, send)


def create_app(
    engine: AsyncEngine,
    model_name: str,
    api_key: str | None = None,
    max_queue: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    flows: dict[str, Flow] | None = None,
    allowed_origins: Sequence[str] = (),
) -> FastAPI:
    """A FastAPI app serving `engine` under `model_name` with the OpenAI routes (and `flows`, if given).

    `api_key` guards every route but /health and the UI; `allowed_origins` may call it from browsers
    (CORS); see security.py.
    """
    state = ServerState(engine, model_name, api_key, max_queue)
    app = FastAPI(title="vivace", description="OpenAI-compatible API over the vivace engine")
    app.state.server = state
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(AccessGuard, api_key=api_key, allowed_origins=allowed_origins)
    app.add_middleware(RequestCounter, metrics=lambda: state.metrics)
    app.add_middleware(IgnoredFieldsHeader)
    if allowed_origins:  # outermost: preflights are answered before the key is asked for
        app.add_middleware(
            CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["*"], allow_headers=["*"]
        )

    v1 = APIRouter(prefix="/v1")

    @app.get("/health")
    async def health() -> dict[str, str]:
        if state.draining:  # load balancers stop routing here while in-flight requests finish
            raise APIError(503, "the server is shutting down", code="server_shutdown")
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(state), *lora_cards(state)]}

    @v1.get("/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        adapter = state.resolve_model(model_id)
        return _model_card(state) if adapter is None else next(c for c in lora_cards(state) if c["id"] == adapter)

    @v1.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body: ChatCompletionRequest = await parse_body(request, ChatCompletionRequest)
        lora = state.resolve_model(body.model)
        params = body.sampling_params()
        tools = plan_tools(body.tools, body.tool_choice, body.parallel_tool_calls)
        if tools.constraint is not None:
            params = constrained(params, tools.constraint)
        prompt = await asyncio.to_thread(state.chat_prompt, body, tools)  # templating and tokenizing: off the loop
        meta = ResponseMeta(
            f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model or state.model_name, CHAT, body.n, tools.parse
        )
        return await _respond(request, state, meta, [prompt], params, body, lora)

    @v1.post("/completions")
    async def completions(request: Request) -> Response:
        body: CompletionRequest = await parse_body(request, CompletionRequest)
        lora = state.resolve_model(body.model)
        params = body.sampling_params()
        meta = ResponseMeta(f"cmpl-{uuid.uuid4().hex}", int(time.time()), body.model or state.model_name, TEXT, body.n)
        return await _respond(request, state, meta, body.prompts(), params, body, lora)

    @v1.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        body: ClassifyRequest = await parse_body(request, ClassifyRequest)
        state.check_model(body.model)
        task = classify_task(body)
        state.admit(len(task.labels))  # one scored sequence per label
        try:
            return await _unless_disconnected(request, classify_labels(state, task))
        finally:
            state.release(len(task.labels))

    install_tokenize_routes(app, state)
    install_lora_routes(v1, state)
    install_embeddings(v1, state)
    if flows is not None:
        install_flows(app, v1, flows, state)
    app.include_router(v1)
    mount_ui(app)
    return app


def _model_card(state: ServerState) -> dict[str, Any]:
    return {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "vivace",
        "max_model_len": state.engine.engine.max_model_len,
    }


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (which aborts its requests) if the client hangs up first."""
    task = asyncio.ensure_future(work)

    async def hang_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise APIError(499, "the client closed the connection", code="client_closed")
    return task.result()


async def _respond(
    request: Request,
    state: ServerState,
    meta: ResponseMeta,
    prompts: list[str | list[int]],
    params: SamplingParams,
    body: ChatCompletionRequest | CompletionRequest,
    lora: str | None = None,
) -> Response:
    """Run the prompts (with LoRA adapter `lora`, if given); a JSON body when they finish, or an SSE stream of chunks."""
    if body.stream and params.prompt_logprobs is not None:
        raise APIError(400, "prompt_logprobs is not supported with stream=true", param="prompt_logprobs")
    units = len(prompts) * params.n  # sequences this request puts into the engine
    check_sequences(len(prompts), params.n)
    state.admit(units)
    release = functools.partial(state.release, units)
    try:
        primed = await _unless_disconnected(
            request, start(state.engine, prompts, params, meta.id, state.observed(), lora, body.session)
        )
    except BaseException:
        release()
        raise
    if body.stream:
        return SSEResponse(
            sse_events(meta, primed, state.logprobs, body.include_usage, body.continuous_usage),
            on_close=release,
            also_close=[gen for _, gen in primed],
        )
    try:
        finals = await _unless_disconnected(request, collect(primed))
    finally:
        release()
    errors = [o.error for o in finals if o.error]
    if errors:
        raise APIError(500, f"the engine failed on this request: {errors[0]}", code="engine_error")
    return JSONResponse(full_body(meta, finals, state.logprobs))
