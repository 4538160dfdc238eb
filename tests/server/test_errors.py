"""Every error leaves in OpenAI's shape with the right status and names what was wrong."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.conftest import API_KEY, MAX_MODEL_LEN, MODEL

pytestmark = pytest.mark.slow

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(server.base_url + path, timeout=60, **kwargs)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_malformed_json(server):
    error = error_of(
        post(server, "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}), 400
    )
    assert "malformed JSON" in error["message"]


def test_body_must_be_an_object(server):
    error_of(post(server, "/v1/completions", json=[1, 2]), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1),
        ("max_tokens", 0),
        ("n", 1000),
        ("top_p", 0),
        ("presence_penalty", 5),
        ("logit_bias", {"x": 1}),
        ("logit_bias", {"5": 101}),
        ("seed", 2**64),
    ],
)
def test_out_of_range_values_name_the_field(server, field, value):
    error = error_of(post(server, "/v1/chat/completions", json={**CHAT, field: value}), 400)
    assert error["param"] == field
    assert field in error["message"]


def test_wrong_type_names_the_field(server):
    error = error_of(post(server, "/v1/chat/completions", json={**CHAT, "temperature": "hot"}), 400)
    assert error["param"] == "temperature"


def test_max_completion_tokens_named(server):
    error = error_of(post(server, "/v1/chat/completions", json={**CHAT, "max_completion_tokens": 0}), 400)
    assert error["param"] == "max_completion_tokens"


def test_missing_field_is_named(server):
    error = error_of(post(server, "/v1/completions", json={"model": MODEL}), 400)
    assert error["param"] == "prompt"


def test_top_logprobs_needs_logprobs(server):
    error = error_of(post(server, "/v1/chat/completions", json={**CHAT, "top_logprobs": 2}), 400)
    assert error["param"] == "top_logprobs"


def test_token_id_out_of_vocabulary(server):
    error = error_of(post(server, "/v1/completions", json={"model": MODEL, "prompt": [10**9]}), 400)
    assert error["param"] == "prompt"


def test_unknown_model_is_404(server):
    error = error_of(post(server, "/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404)
    assert error["code"] == "model_not_found" and "gpt-9" in error["message"]
    error_of(httpx.get(server.base_url + "/v1/models/gpt-9"), 404)


def test_prompt_too_long_gives_both_counts(server):
    prompt = "hello " * (MAX_MODEL_LEN + 100)
    error = error_of(post(server, "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4}), 400)
    assert error["code"] == "context_length_exceeded"
    assert f"{MAX_MODEL_LEN:,}" in error["message"]
    count = error["message"].split(" tokens")[0].split()[-1]
    assert int(count.replace(",", "")) > MAX_MODEL_LEN


def test_prompt_too_long_streaming_is_still_a_400(server):
    messages = [{"role": "user", "content": "hello " * (MAX_MODEL_LEN + 100)}]
    error = error_of(post(server, "/v1/chat/completions", json={**CHAT, "messages": messages, "stream": True}), 400)
    assert error["code"] == "context_length_exceeded"


def test_sdk_raises_typed_errors(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=CHAT["messages"], temperature=-1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")


def test_api_key_required(keyed_server):
    error = error_of(post(keyed_server, "/v1/chat/completions", json=CHAT), 401)
    assert error["code"] == "invalid_api_key"
    error_of(post(keyed_server, "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"}), 401)
    error_of(httpx.get(keyed_server.base_url + "/v1/models"), 401)
    assert httpx.get(keyed_server.base_url + "/health").status_code == 200
    client = openai.OpenAI(base_url=keyed_server.base_url + "/v1", api_key=API_KEY, max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=CHAT["messages"], max_tokens=2).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed_server.base_url + "/v1", api_key="bad", max_retries=0).models.list()


def test_body_over_limit_is_413(keyed_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 10_000}]}
    error = error_of(post(keyed_server, "/v1/chat/completions", json=big, headers=headers), 413)
    assert error["code"] == "request_too_large"

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    # No Content-Length: the limit holds while the body is read.
    error_of(post(keyed_server, "/v1/chat/completions", content=chunks(), headers=headers), 413)


def test_unknown_route_is_openai_shaped(server):
    error_of(httpx.get(server.base_url + "/v1/nothing"), 404)
