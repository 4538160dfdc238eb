"""vLLM's /tokenize, /detokenize and /version over real HTTP; /health while draining."""

from __future__ import annotations

import httpx
import pytest

from tests.live_server import start_uvicorn, stop_uvicorn
from tests.server.conftest import API_KEY, GREEDY_MESSAGES, MODEL
from vivace import __version__

pytestmark = pytest.mark.slow

TEXT = "Hello, world! Ünïcödé and 日本語."


def post(server, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=60, **kwargs)


def test_tokenize_a_prompt_as_completions_would(server):
    tokenizer = server.engine.tokenizer
    response = post(server, "/tokenize", {"model": MODEL, "prompt": TEXT, "return_token_strs": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["tokens"] == tokenizer.encode(TEXT, add_special_tokens=True)
    assert body["count"] == len(body["tokens"])
    assert body["max_model_len"] == server.engine.engine.max_model_len
    assert body["token_strs"] == tokenizer.convert_ids_to_tokens(body["tokens"])
    # The count is what a completion of the same prompt is billed.
    usage = post(server, "/v1/completions", {"prompt": TEXT, "max_tokens": 1}).json()["usage"]
    assert usage["prompt_tokens"] == body["count"]


def test_tokenize_messages_as_chat_completions_would(server):
    body = post(server, "/tokenize", {"messages": GREEDY_MESSAGES}).json()
    assert body["token_strs"] is None
    usage = post(server, "/v1/chat/completions", {"messages": GREEDY_MESSAGES, "max_tokens": 1}).json()["usage"]
    assert body["count"] == usage["prompt_tokens"]
    bare = post(server, "/tokenize", {"messages": GREEDY_MESSAGES, "add_generation_prompt": False}).json()
    assert bare["tokens"] == body["tokens"][: bare["count"]] and bare["count"] < body["count"]


def test_detokenize_inverts_tokenize(server):
    ids = post(server, "/tokenize", {"prompt": TEXT, "add_special_tokens": False}).json()["tokens"]
    response = post(server, "/detokenize", {"model": MODEL, "tokens": ids})
    assert response.status_code == 200
    assert response.json() == {"prompt": TEXT}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/detokenize", {"tokens": [10**9]}, "tokens"),
        ("/detokenize", {"tokens": "abc"}, "tokens"),
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/tokenize", {"messages": GREEDY_MESSAGES, "continue_final_message": True}, "continue_final_message"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(server, path, body, param):
    response = post(server, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_model_is_404(server):
    assert post(server, "/tokenize", {"model": "gpt-9", "prompt": "x"}).status_code == 404


def test_version(server):
    assert httpx.get(server.base_url + "/version").json() == {"version": __version__}


def test_tokenize_needs_the_key_when_one_is_set(keyed_server):
    assert post(keyed_server, "/tokenize", {"prompt": "x"}).status_code == 401
    ok = post(keyed_server, "/tokenize", {"prompt": "x"}, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200


def test_health_is_503_while_draining(serving_engine):
    from vivace.server.app import create_app

    app = create_app(serving_engine.engine, MODEL)
    server, thread, url = start_uvicorn(app)
    try:
        assert httpx.get(url + "/health").status_code == 200
        app.state.server.draining = True
        response = httpx.get(url + "/health")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "server_shutdown"
    finally:
        stop_uvicorn(server, thread)
