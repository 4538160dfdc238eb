"""What crosses from the Ray Serve ingress to an engine replica: one HTTP request, its routing keys,
and its response as the ASGI messages the replica's own FastAPI app sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

# The ingress forwards only these; hop-by-hop headers stay with the connection they came on.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"})


@dataclass
class ForwardedRequest:
    """An HTTP request as the ingress read it, plus the keys the request router matches on.

    `prompt` is the request's text in conversation order (Ray's own prefix router reads a `prompt`
    attribute too); `session` is its `session_id` or `user` field, when it has one.
    """

    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None = None
    prompt: str = ""
    session: str | None = None


def forwarded(
    method: str,
    path: str,
    query_string: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    client: tuple[str, int] | None = None,
) -> ForwardedRequest:
    """The request to forward, with its routing keys read from a JSON body (none when it is not JSON)."""
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    request = ForwardedRequest(method, path, query_string, kept, body, client)
    try:
        fields = json.loads(body) if body else None
    except ValueError:  # not JSON: the replica's app answers 400, routed like any request
        fields = None
    if isinstance(fields, dict):
        request.prompt = routing_text(fields)
        session = fields.get("session_id") or fields.get("user")
        request.session = session if isinstance(session, str) and session else None
    return request


def routing_text(fields: dict[str, Any]) -> str:
    """The text a request's prompt grows from: its messages (role and content, in order) or its prompt.

    A chat template renders messages in order, so two conversations whose texts share a prefix share
    the tokens of that prefix too (up to the last message's boundary).
    """
    messages = fields.get("messages")
    if isinstance(messages, list):
        return "".join(
            f"{m.get('role', '')}\x1f{_content_text(m.get('content'))}\x1e" for m in messages if isinstance(m, dict)
        )
    prompt = fields.get("prompt")
    if isinstance(prompt, list) and prompt:
        prompt = prompt[0] if isinstance(prompt[0], (str, list)) else prompt
    if isinstance(prompt, list):  # token ids
        return " ".join(str(t) for t in prompt)
    return prompt if isinstance(prompt, str) else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


async def serve_asgi(
    app: ASGIApp, request: ForwardedRequest, extra_headers: list[tuple[bytes, bytes]] = ()
) -> AsyncIterator[Message]:
    """Run `request` through `app` and yield the messages it sends (`extra_headers` added to the start).

    Closing the iterator early (the client went away, or the ingress was cancelled) tells the app the
    client disconnected, exactly as uvicorn would, and waits for it to finish: its own disconnect
    handling aborts the engine requests.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query_string,
        "root_path": "",
        "headers": request.headers,
        "client": request.client,
        "server": None,
    }
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and extra_headers:
            message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
        await sent.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await sent.put(None)

    task = asyncio.create_task(run())
    try:
        while (message := await sent.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                break
    finally:
        disconnected.set()
        # Shielded: a cancelled stream must still let the app abort its engine requests. What the app
        # raised it has already answered (Starlette's error middleware sends the 500).
        await asyncio.shield(asyncio.wait({task}, timeout=30))
