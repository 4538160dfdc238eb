"""Exposure over real HTTP: the key guards every route but /health and the UI; without a key, browser guards; CORS."""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest

from tests.server.conftest import API_KEY, MODEL, _start, stop_uvicorn
from vivace.server.security import DropQueryStrings, is_local_host

pytestmark = pytest.mark.slow

ORIGIN = "https://app.example"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.mark.parametrize("path", ["/metrics", "/docs", "/openapi.json", "/redoc", "/v1/models", "/v1/flows"])
def test_the_key_guards_every_api_route(keyed_server, path):
    response = httpx.get(keyed_server.base_url + path)
    assert response.status_code == 401, path
    assert response.json()["error"]["code"] == "invalid_api_key"
    authorized = httpx.get(keyed_server.base_url + path, headers={"Authorization": f"Bearer {API_KEY}"})
    assert authorized.status_code != 401


@pytest.mark.parametrize("path", ["/health", "/", "/static/app.js"])
def test_health_and_the_ui_stay_public(keyed_server, path):
    assert httpx.get(keyed_server.base_url + path).status_code == 200


def test_with_a_key_any_host_and_content_type_get_through_to_the_handler(keyed_server):
    headers = {"Authorization": f"Bearer {API_KEY}", "Host": "vivace.internal", "content-type": "text/plain"}
    response = httpx.post(keyed_server.base_url + "/v1/chat/completions", content=b"{}", headers=headers)
    assert response.status_code == 400  # the body's fault, not the transport's


def test_without_a_key_other_host_names_are_refused(server):
    refused = httpx.get(server.base_url + "/v1/models", headers={"Host": "attacker.example:8000"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(server.base_url + "/v1/models", headers={"Host": "localhost:1"}).status_code == 200


def test_without_a_key_bodies_must_be_declared_json(server):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = httpx.post(
            server.base_url + "/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": content_type}
        )
        assert response.status_code == 415, content_type
        assert response.json()["error"]["param"] == "content-type"
    assert httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, timeout=60).status_code == 200


def test_without_a_key_cross_origin_pages_are_refused(server):
    response = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers={"Origin": ORIGIN})
    assert response.status_code == 403 and response.json()["error"]["code"] == "origin_not_allowed"
    same = httpx.post(
        server.base_url + "/v1/chat/completions", json=CHAT, headers={"Origin": server.base_url}, timeout=60
    )
    assert same.status_code == 200  # the server's own web UI


@pytest.fixture(scope="module")
def cors_server(server):
    from vivace.server.app import create_app

    uvicorn_server, thread, base_url = _start(create_app(server.engine, MODEL, allowed_origins=[ORIGIN]))
    yield base_url
    stop_uvicorn(uvicorn_server, thread)


def test_allowed_origins_get_cors_headers_and_preflights(cors_server):
    preflight = httpx.options(
        cors_server + "/v1/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    reply = httpx.post(cors_server + "/v1/chat/completions", json=CHAT, headers={"Origin": ORIGIN}, timeout=60)
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.post(cors_server + "/v1/chat/completions", json=CHAT, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_the_openai_client_still_works_without_a_key(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=CHAT["messages"], max_tokens=2).choices


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("app.localhost:1", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("10.1.2.3", True),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_local_hosts(host, local):
    assert is_local_host(host) is local


def test_access_log_lines_lose_their_query_strings():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/models?api_key=secret", "1.1", 200),
        None,
    )
    assert DropQueryStrings().filter(record)
    assert "secret" not in record.getMessage() and "/v1/models" in record.getMessage()
