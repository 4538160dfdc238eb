"""Admission control on a live server: beyond the in-flight limit, 429 with Retry-After; then serving again."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server.conftest import MODEL, _start
from vivace.server.app import create_app


@pytest.mark.slow
def test_full_server_answers_429_with_retry_after(server):
    app = create_app(server.engine, MODEL, max_queue=0)
    app.state.server.max_in_flight = 1  # the shared engine's batch is large; one request fills this server
    uvicorn_server, thread, base = _start(app)
    try:
        started, release = threading.Event(), threading.Event()

        def hold() -> None:
            body = {"model": MODEL, "prompt": "Count:", "max_tokens": 300, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", base + "/v1/completions", json=body, timeout=60) as response:
                for _ in response.iter_lines():
                    started.set()
                    if release.is_set():
                        break

        holder = threading.Thread(target=hold)
        holder.start()
        assert started.wait(60)
        refused = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        release.set()
        holder.join(60)
        deadline = time.monotonic() + 30
        while app.state.server.in_flight and time.monotonic() < deadline:  # the hang-up is noticed
            time.sleep(0.05)
        ok = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert ok.status_code == 200
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)
