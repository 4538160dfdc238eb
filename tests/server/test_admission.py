"""Admission control on a live server: counted in sequences, 429 with Retry-After beyond the limit, per-request caps."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server.conftest import MODEL, _start
from vivace.server.admission import MAX_PROMPTS, MAX_SEQUENCES_PER_REQUEST
from vivace.server.app import create_app


@pytest.mark.slow
def test_full_server_answers_429_with_retry_after(server):
    app = create_app(server.engine, MODEL, max_queue=0)
    app.state.server.admission.limit = 4  # sequences; the shared engine's batch is large
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
        # 2 prompts x n=2 is 4 sequences: with the held one, 5 > 4.
        body = {"model": MODEL, "prompt": ["Hi", "Yo"], "n": 2, "max_tokens": 2}
        refused = httpx.post(base + "/v1/completions", json=body)
        assert refused.status_code == 429
        assert "needs 4" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        one = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert one.status_code == 200  # one sequence still fits beside the held one
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["x"] * (MAX_PROMPTS + 1)}, "prompt"),
        ({"prompt": ["x"] * (MAX_SEQUENCES_PER_REQUEST // 8 + 1), "n": 8}, "n"),
        ({"prompt": [[1, 2]] * (MAX_PROMPTS + 1)}, "prompt"),
    ],
)
def test_one_request_cannot_flood_the_engine(server, body, param):
    response = httpx.post(
        server.base_url + "/v1/completions", json={"model": MODEL, "max_tokens": 1, **body}, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert server.engine.stats()["num_waiting"] == 0


@pytest.mark.slow
def test_prompt_list_at_its_cap_is_served(server):
    body = {"model": MODEL, "prompt": ["Hi"] * (MAX_SEQUENCES_PER_REQUEST // 4), "n": 4, "max_tokens": 1}
    response = httpx.post(server.base_url + "/v1/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == MAX_SEQUENCES_PER_REQUEST
