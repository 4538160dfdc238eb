"""Structured outputs over real HTTP with the official openai client: response_format (the SDK's
Pydantic parse), vLLM's guided_* fields, streaming, and errors that name the field."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import BaseModel, Field

from tests.server.conftest import MODEL

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int = Field(ge=0, le=100_000_000)


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_sdk_parse_returns_the_pydantic_object(client):
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City,
        temperature=0,
        max_tokens=150,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert City.model_validate_json(choice.message.content) == choice.message.parsed


def test_json_object_on_completions_and_streamed_chat(client):
    text = client.completions.create(
        model=MODEL,
        prompt="A JSON object describing a cat:",
        max_tokens=120,
        temperature=0.7,
        seed=3,
        extra_body={"response_format": {"type": "json_object"}},
    )
    assert text.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(text.choices[0].text), dict)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance(json.loads(content), dict)


@pytest.mark.parametrize(
    ("field", "value", "check"),
    [
        ("guided_regex", r"(red|green|blue) and (cat|dog)", lambda t: t.split(" and ")[1] in ("cat", "dog")),
        ("guided_choice", ["alpha", "beta"], lambda t: t in ("alpha", "beta")),
        ("guided_grammar", 'start: "x" ("y")? NUM\nNUM: /[0-9]{2}/', lambda t: t[0] == "x" and t[-2:].isdigit()),
        ("guided_json", {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}, None),
        ("structured_outputs", {"regex": "[0-9]{3}"}, lambda t: len(t) == 3 and t.isdigit()),
    ],
)
def test_vllm_fields(client, field, value, check):
    out = client.completions.create(
        model=MODEL, prompt="Answer:", max_tokens=40, temperature=0, extra_body={field: value}
    ).choices[0]
    assert out.finish_reason == "stop"
    if check is None:
        assert len(json.loads(out.text)) == 2
    else:
        assert check(out.text), out.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": {"type": "yaml"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "not": {}}}}},
            "response_format",
        ),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"guided_grammar": "start: undefined_rule"}, "guided_grammar"),
        ({"guided_json": {"type": "object"}, "guided_regex": "a"}, "guided_regex"),
    ],
)
def test_bad_constraints_are_400_naming_the_field(server, body, param):
    r = httpx.post(
        server.base_url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 4, **body}, timeout=60
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    ok = httpx.post(
        server.base_url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=60
    )
    assert ok.status_code == 200
