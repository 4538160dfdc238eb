"""What the ingress forwards and how a replica runs it through its app (vivace/ray_serve/forwarding.py),
on a real Starlette app, without Ray."""

from __future__ import annotations

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from vivace.ray_serve.forwarding import forwarded, routing_text, serve_asgi


def test_routing_keys_from_chat_and_completion_bodies():
    chat = {
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    }
    turn2 = {
        "messages": [*chat["messages"], {"role": "assistant", "content": "yo"}, {"role": "user", "content": "more"}]
    }
    assert routing_text(turn2).startswith(routing_text(chat))  # a conversation's text grows at the end
    assert "hi" in routing_text(chat)
    assert routing_text({"prompt": "abc"}) == "abc"
    assert routing_text({"prompt": ["first", "second"]}) == "first"
    assert routing_text({"prompt": [1, 2, 3]}) == "1 2 3"
    request = forwarded(
        "POST",
        "/v1/chat/completions",
        b"",
        [(b"connection", b"keep-alive")],
        json.dumps({**chat, "user": "u1"}).encode(),
    )
    assert request.session == "u1" and request.prompt == routing_text(chat) and request.headers == []
    assert forwarded("POST", "/", b"", [], json.dumps({"user": "u", "session_id": "s"}).encode()).session == "s"
    broken = forwarded("POST", "/", b"", [], b"{not json")
    assert broken.prompt == "" and broken.session is None and broken.body == b"{not json"


async def test_a_request_runs_through_the_app_and_closing_early_is_a_disconnect():
    disconnected = asyncio.Event()

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"body": (await request.json()), "query": request.url.query})

    async def stream(request: Request) -> StreamingResponse:
        async def chunks():
            try:
                for i in range(1000):
                    yield f"data: {i}\n\n"
                    await asyncio.sleep(0.01)
            finally:
                disconnected.set()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/stream", stream)])
    request = forwarded("POST", "/echo", b"a=1", [(b"content-type", b"application/json")], b'{"x": 1}')
    messages = [m async for m in serve_asgi(app, request, [(b"x-replica", b"r1")])]
    assert messages[0]["status"] == 200 and (b"x-replica", b"r1") in messages[0]["headers"]
    assert json.loads(b"".join(m.get("body", b"") for m in messages[1:])) == {"body": {"x": 1}, "query": "a=1"}

    gen = serve_asgi(app, forwarded("GET", "/stream", b"", [], b""))
    assert (await anext(gen))["type"] == "http.response.start"
    assert (await anext(gen))["body"] == b"data: 0\n\n"
    await gen.aclose()  # the client went away: the app's stream is closed, not left running
    assert disconnected.is_set()
