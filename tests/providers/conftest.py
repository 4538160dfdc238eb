"""Real peers for the provider tests: a vivace server on the packaged model, and a scripted HTTP peer."""

import asyncio
import json
import time
from dataclasses import dataclass, field

import pytest

# Re-exported: the provider tests import them from here.
from tests.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS  # noqa: F401
from tests.live_server import start_uvicorn, stop_uvicorn

MODEL = "smollm2-test"


@dataclass
class Served:
    base_url: str  # ends in /v1
    engine: object  # the AsyncEngine behind it
    tokenizer: object
    offline: dict[str, object]  # greedy reference outputs (RequestOutput), computed before serving


@pytest.fixture(scope="session")
def served(serving_engine):
    """The session's serving engine (float32: greedy text stays comparable with the offline engine) over HTTP."""
    from vivace.server.app import create_app

    server, thread, url = start_uvicorn(create_app(serving_engine.engine, MODEL))
    yield Served(url + "/v1", serving_engine.engine, serving_engine.tokenizer, serving_engine.offline)
    stop_uvicorn(server, thread)


@dataclass
class Peer:
    """A scripted OpenAI-compatible peer: each request takes the next step of `script`."""

    base_url: str
    script: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # {"time", "path", "body", "authorization"} per request
    sleeping: int = 0  # requests inside a "sleep" step now
    most_sleeping: int = 0  # the most at once since the last plan()

    def plan(self, *steps: dict) -> None:
        self.script[:] = list(steps)
        self.requests.clear()
        self.most_sleeping = 0


def _peer_app(peer: Peer):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    async def handle(request: Request, kind: str):
        body = await request.json()
        peer.requests.append(
            {
                "time": time.monotonic(),
                "path": request.url.path,
                "body": body,
                "authorization": request.headers.get("authorization"),
            }
        )
        step = peer.script.pop(0) if peer.script else {"do": "ok"}
        if step["do"] == "status":
            headers = {"Retry-After": step["retry_after"]} if "retry_after" in step else {}
            message = step.get("message", f"scripted {step['status']}")
            if step.get("echo_auth"):
                message += f" (you sent {request.headers.get('authorization')})"
            return JSONResponse(
                {"error": {"message": message, "type": "scripted", "code": None}},
                status_code=step["status"],
                headers=headers,
            )

        async def events():
            if step["do"] == "sleep":
                peer.sleeping += 1
                peer.most_sleeping = max(peer.most_sleeping, peer.sleeping)
                try:
                    await asyncio.sleep(step["seconds"])
                finally:
                    peer.sleeping -= 1
            words = step.get("words", ["Hello", " world"])
            for i, word in enumerate(words):
                if step["do"] == "error_after" and i == step["after"]:
                    err = {"error": {"message": "scripted failure mid-stream", "type": "server_error"}}
                    yield f"data: {json.dumps(err)}\n\n"
                    return
                choice = {"index": 0, "delta": {"content": word}} if kind == "chat" else {"index": 0, "text": word}
                # "raw": non-ASCII unescaped, as vivace and vLLM send it (U+2028 and friends included).
                chunk = json.dumps({"choices": [{**choice, "finish_reason": None}]}, ensure_ascii=not step.get("raw"))
                yield f"data: {chunk}\n\n"
            last = {"index": 0, "finish_reason": "stop", **({"delta": {}} if kind == "chat" else {"text": ""})}
            yield f"data: {json.dumps({'choices': [last]})}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': {'prompt_tokens': 3, 'completion_tokens': len(words)}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, "completion")

    return app


@pytest.fixture(scope="session")
def _peer_server():
    peer = Peer("")
    server, thread, url = start_uvicorn(_peer_app(peer))
    peer.base_url = url + "/v1"
    yield peer
    stop_uvicorn(server, thread)


@pytest.fixture
def peer(_peer_server) -> Peer:
    """The scripted peer, with an empty script and request log."""
    _peer_server.plan()
    return _peer_server
