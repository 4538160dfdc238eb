"""Property-based: malformed and edge-case bodies never get a 5xx, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.server.conftest import GREEDY_PROMPT, MODEL, SERVED_MAX_MODEL_LEN
from vivace.engine.classify_prompt import MAX_LABELS
from vivace.server.admission import MAX_PROMPTS
from vivace.server.json_body import MAX_DEPTH
from vivace.server.protocol import MAX_N

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


# ---- the classes a red-team run found 500s in: integer edges, deep nesting, lone surrogates, list caps ----

INT_EDGES = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1]
INT_EDGES += [2**64 - 2, 2**64 - 1, 2**64, 2**70, -(2**70)]
FLOAT_EDGES = [0.0, -0.0, 5e-324, 1e-300, 1e308, -1e308, 1.0, 2.0, -2.0, 2.0000001, 100.0, 100.5, -100.5]
NUMERIC_FIELDS = [
    "n",
    "max_tokens",
    "min_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "logprobs",
]
edge_numbers = st.one_of(st.sampled_from(INT_EDGES), st.sampled_from(FLOAT_EDGES))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edges=st.dictionaries(st.sampled_from(NUMERIC_FIELDS), edge_numbers, min_size=1, max_size=4),
    bias=st.one_of(st.none(), st.dictionaries(st.sampled_from(INT_EDGES).map(str), edge_numbers, max_size=2)),
)
def test_integer_and_float_edges_on_every_numeric_field_never_5xx(server, edges, bias):
    # A prompt that leaves 4 tokens of context: whatever max_tokens says, a valid body generates at most 4.
    body = {"model": MODEL, "prompt": [42] * (SERVED_MAX_MODEL_LEN - 4), **edges}
    if bias is not None:
        body["logit_bias"] = bias
    response = _post(server.base_url, "/v1/completions", json.dumps(body).encode())
    assert response.status_code < 500, (body, response.text)
    if response.status_code == 400:
        assert response.json()["error"]["param"] in {*edges, "logit_bias", "prompt"}, (body, response.text)


def _nested(depth: int) -> str:
    return "[" * depth + '"x"' + "]" * depth


RAW = "@raw@"  # replaced by a raw JSON fragment (deep values are written as text: nothing recurses on this side)
hostile_fragments = st.one_of(
    st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2).map(_nested),
    st.sampled_from([1000, 30_000]).map(_nested),
    st.sampled_from(['"\\ud800"', '["ok", "\\udfff"]', '{"\\ud800": "x"}', '[{"text": "a\\ud800b"}]']),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    field=st.sampled_from(["prompt", "messages", "text", "labels", "stop", "user", "template", "model", "extra"]),
    fragment=hostile_fragments,
)
def test_deep_nesting_and_lone_surrogates_anywhere_never_5xx(server, endpoint, field, fragment):
    body = json.dumps({**VALID[endpoint], field: RAW}).replace(json.dumps(RAW), fragment)
    response = _post(server.base_url, endpoint, body.encode())
    assert response.status_code < 500, (endpoint, field, response.text[:300])
    if fragment.count("[") > MAX_DEPTH or "\\ud8" in fragment or "\\udf" in fragment:
        assert response.status_code == 400, (endpoint, field, fragment[:80], response.text[:300])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.sampled_from([1, MAX_PROMPTS // 16, MAX_PROMPTS, MAX_PROMPTS + 1]),
    n=st.sampled_from([1, 2, MAX_N, MAX_N + 1]),
    labels=st.sampled_from([1, MAX_LABELS, MAX_LABELS + 1]),
)
def test_list_valued_fields_at_and_past_their_caps_never_5xx(server, prompts, n, labels):
    body = {"model": MODEL, "prompt": ["Hi"] * prompts, "n": n, "max_tokens": 1, "temperature": 0}
    response = _post(server.base_url, "/v1/completions", json.dumps(body).encode())
    assert response.status_code < 500, response.text[:300]
    if response.status_code == 200:
        assert len(response.json()["choices"]) == prompts * n
    else:
        assert response.json()["error"]["param"] in {"prompt", "n"}
    body = {"model": MODEL, "text": "x", "labels": [f"l{i}" for i in range(labels)]}
    response = _post(server.base_url, "/v1/classify", json.dumps(body).encode())
    assert (response.status_code == 200) == (labels <= MAX_LABELS), response.text[:300]
