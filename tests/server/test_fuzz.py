"""Property-based: malformed and edge-case bodies never get a 5xx, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.server.conftest import GREEDY_PROMPT, MODEL

pytestmark = pytest.mark.slow

ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/classify", "/v1/embeddings"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
small_numbers = st.one_of(st.integers(-5, 300), st.floats(-3, 3), st.floats(allow_nan=True, allow_infinity=True))
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "developer", "assistant", "tool", "bogus", ""])},
        optional={"content": st.one_of(st.text(max_size=60), anything), "name": anything},
    ),
    max_size=3,
)
# Fields the endpoints know, with values from plausible to absurd. max_tokens stays small or invalid,
# so a body that happens to be valid generates a few tokens, not a whole context.
fields = {
    "model": st.one_of(st.just(MODEL), st.text(max_size=10), anything),
    "messages": st.one_of(messages, anything),
    "prompt": st.one_of(
        st.text(max_size=80),
        st.lists(st.text(max_size=20), max_size=3),
        st.lists(st.integers(-3, 60000), max_size=8),
        anything,
    ),
    "max_tokens": st.one_of(st.integers(-3, 4), anything),
    "max_completion_tokens": st.one_of(st.integers(-3, 4), anything),
    "n": st.one_of(st.integers(-2, 5), st.integers(100, 10**6), anything),
    "temperature": small_numbers,
    "top_p": small_numbers,
    "top_k": small_numbers,
    "min_p": small_numbers,
    "presence_penalty": small_numbers,
    "frequency_penalty": small_numbers,
    "repetition_penalty": small_numbers,
    "seed": st.one_of(st.integers(-(2**70), 2**70), anything),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6), anything),
    "logit_bias": st.one_of(st.dictionaries(st.text(max_size=6), small_numbers, max_size=3), anything),
    "logprobs": st.one_of(st.booleans(), st.integers(-2, 30), anything),
    "top_logprobs": st.one_of(st.integers(-2, 30), anything),
    "stream": st.one_of(st.booleans(), anything),
    "stream_options": st.one_of(
        st.fixed_dictionaries({"include_usage": st.booleans()}, optional={"continuous_usage_stats": anything}), anything
    ),
    "best_of": st.one_of(st.integers(-2, 5), anything),
    "use_beam_search": anything,
    "echo": anything,
    "suffix": anything,
    "add_generation_prompt": anything,
    "continue_final_message": anything,
    "ignore_eos": anything,
    "min_tokens": st.one_of(st.integers(-2, 6), anything),
    "text": st.one_of(st.text(max_size=60), anything),
    "labels": st.one_of(st.lists(st.text(max_size=10), max_size=4), anything),
    "template": st.one_of(st.text(max_size=30), st.just("{text} is {label}"), anything),
    "user": anything,
    "input": st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3), anything),
    "encoding_format": st.one_of(st.sampled_from(["float", "base64"]), anything),
    "dimensions": st.one_of(st.integers(-2, 1000), anything),
}
VALID = {
    "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
    "/v1/completions": {"model": MODEL, "prompt": "Hello", "max_tokens": 3},
    "/v1/classify": {"model": MODEL, "text": "I love it", "labels": ["positive", "negative"]},
    "/v1/embeddings": {"model": MODEL, "input": "Hello"},
}
# A valid body with one to three fields replaced: edge values reach the engine instead of the parser.
near_valid = st.fixed_dictionaries({}, optional=fields).filter(lambda d: 0 < len(d) <= 3)
bodies = st.one_of(
    st.builds(
        lambda chosen, extra: {**chosen, **extra},
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(st.text(max_size=12), anything, max_size=2),
    ),
    anything,
)


def _post(base_url: str, endpoint: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(timeout=120) as client:
        response = client.post(
            base_url + endpoint, content=content, headers={"content-type": "application/json", **(headers or {})}
        )
        response.read()
        return response


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies, mutation=near_valid, mutate=st.booleans())
def test_json_bodies_never_5xx(server, endpoint, body, mutation, mutate):
    if mutate:
        body = {**VALID[endpoint], **mutation}
    response = _post(server.base_url, endpoint, json.dumps(body).encode())
    assert response.status_code < 500, (body, response.text)
    event(f"{endpoint} -> {response.status_code}")  # shown by --hypothesis-show-statistics
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and "type" in error
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("\n\n")
        for sse_event in response.text.split("\n\n")[:-1]:
            assert sse_event.startswith("data: ")
            payload = sse_event[len("data: ") :]
            if payload != "[DONE]":
                assert "server_error" not in payload, (body, payload)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    raw=st.binary(max_size=200),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]),
)
def test_raw_bytes_never_5xx(server, endpoint, raw, content_type):
    response = _post(server.base_url, endpoint, raw, {"content-type": content_type})
    assert response.status_code < 500, (raw, response.text)


def test_still_serving_after_fuzzing(server):
    body = {"model": MODEL, "prompt": GREEDY_PROMPT, "max_tokens": 12, "temperature": 0}
    response = httpx.post(server.base_url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == server.offline["completion"]
    assert server.engine.stats()["blocks_in_use"] == 0
