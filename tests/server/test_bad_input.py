"""Inputs that once reached a 500: deep JSON, lone surrogates, seeds at the 64-bit edge, bodies cut off."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server.conftest import MODEL
from vivace.server.json_body import MAX_DEPTH

pytestmark = pytest.mark.slow

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
SURROGATE = '"\\ud800"'  # a lone high surrogate, escaped as JSON allows


@pytest.fixture(scope="module")
def server(server):
    """The shared engine behind an app that also serves the packaged flows."""
    from tests.server.conftest import _start, stop_uvicorn
    from vivace.flows.loader import examples_dir, load_flows
    from vivace.server.app import create_app

    uvicorn_server, thread, base_url = _start(create_app(server.engine, MODEL, flows=load_flows(examples_dir())))
    yield type(server)(base_url, server.engine, server.offline)
    stop_uvicorn(uvicorn_server, thread)


def post_raw(server, path: str, raw: str | bytes) -> httpx.Response:
    content = raw.encode() if isinstance(raw, str) else raw
    return httpx.post(server.base_url + path, content=content, headers={"content-type": "application/json"}, timeout=60)


def error_of(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 50_000])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/classify", "/v1/flows/recipe"])
def test_deeply_nested_json_is_a_400(server, path, depth):
    raw = '{"model": "m", "prompt": ' + "[" * depth + "]" * depth + "}"
    error = error_of(post_raw(server, path, raw))
    assert "nests deeper" in error["message"]


def test_nesting_within_the_limit_still_parses(server):
    raw = json.dumps({"model": MODEL, "prompt": "Hi", "max_tokens": 1, "logit_bias": {}, "stop": ["x"]})
    assert post_raw(server, "/v1/completions", raw).status_code == 200


S = "<lone surrogate>"  # replaced by SURROGATE in the JSON text


def with_surrogate(body: dict) -> str:
    """`body` as JSON text with every S string replaced by an escaped lone surrogate."""
    return json.dumps(body).replace(json.dumps(S), SURROGATE)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/completions", {"model": MODEL, "prompt": S}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": ["ok", S]}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": [S]}, "stop"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": S}]}, "messages"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": S}]}]},
            "messages",
        ),
        ("/v1/classify", {"model": MODEL, "text": S, "labels": ["a", "b"]}, "text"),
        ("/v1/classify", {"model": MODEL, "text": "x", "labels": ["a", S]}, "labels"),
        ("/v1/classify", {"model": MODEL, "text": "x", "labels": ["a"], "template": S}, "template"),
        ("/v1/flows/recipe", {"inputs": {"dish": S}}, "inputs"),
    ],
)
def test_lone_surrogates_are_a_400_naming_the_field(server, path, body, field):
    error = error_of(post_raw(server, path, with_surrogate(body)))
    assert error["param"] == field
    assert "surrogate" in error["message"]


def test_valid_astral_characters_pass_the_text_rule(server):
    raw = json.dumps({"model": MODEL, "prompt": "smile \U0001f600", "max_tokens": 1})  # escaped as a surrogate pair
    assert "\\ud83d\\ude00" in raw
    assert post_raw(server, "/v1/completions", raw).status_code == 200


@pytest.mark.parametrize(("seed", "n", "status"), [(2**64 - 1, 2, 400), (2**64 - 2, 2, 200), (2**64 - 1, 1, 200)])
def test_seed_plus_choice_index_must_fit_64_bits(server, seed, n, status):
    body = {**CHAT, "seed": seed, "n": n, "max_tokens": 1, "temperature": 1.0}
    response = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["param"] == "seed"


def _metric(server, name: str, labels: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_client_gone_mid_body_is_a_499_without_a_traceback(server, caplog):
    url = urlsplit(server.base_url)
    before = _metric(server, "vivace_requests_total", 'endpoint="/v1/completions",status="499"')
    caplog.set_level(logging.ERROR)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
        "content-length: 1000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + b'{"model": "')
        time.sleep(0.3)  # the handler is now waiting for the rest of the body
    deadline = time.monotonic() + 60  # a bound on waiting, not a speed claim
    while _metric(server, "vivace_requests_total", 'endpoint="/v1/completions",status="499"') == before:
        assert time.monotonic() < deadline, "the cut-off request was not counted as a 499"
        time.sleep(0.05)
    assert _metric(server, "vivace_requests_total", 'endpoint="/v1/completions",status="500"') == 0
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_still_serving(server):
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.post(server.base_url + "/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    await asyncio.sleep(0)
    assert server.engine.stats()["blocks_in_use"] == 0
