"""Tool calls over real HTTP with the official openai client: forced calls (required, a named function)
come back as valid `tool_calls`, streamed as deltas too, and a multi-turn round trip renders the
assistant's calls and the tool's result into the next prompt."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.server.conftest import MODEL

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
            "required": ["timezone"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def _args(call, name):
    assert call.type == "function" and call.function.name == name and call.id.startswith("call_")
    return json.loads(call.function.arguments)


def test_required_gives_a_valid_call(client):
    out = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    ).choices[0]
    assert out.finish_reason == "tool_calls"
    (call,) = out.message.tool_calls
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert isinstance(args["city"], str)
    else:
        assert call.function.name == "get_time" and args["timezone"] in ("UTC", "CET", "PST")


def test_named_function_streamed_as_deltas(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0
    assert _args(calls[0], "get_time")["timezone"] in ("UTC", "CET", "PST")
    assert not "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_round_trip(client, server):
    first = (
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=60,
        )
        .choices[0]
        .message
    )
    (call,) = first.tool_calls
    city = _args(call, "get_weather")["city"]
    history = QUESTION + [
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": city, "sky": "sunny", "celsius": 21})},
    ]
    second = client.chat.completions.create(
        model=MODEL,
        messages=history,
        tools=[WEATHER],
        temperature=0,
        max_tokens=40,
    ).choices[0]
    assert second.finish_reason in ("stop", "length", "tool_calls")
    assert second.message.content or second.message.tool_calls
    # The call and the result are in the prompt the model saw: the history costs prompt tokens.
    short = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[WEATHER], max_tokens=1)
    long = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=1)
    added = httpx.post(
        server.base_url + "/v1/completions",
        json={"model": MODEL, "prompt": f"get_weather {city} sunny 21", "max_tokens": 1},
    ).json()["usage"]["prompt_tokens"]
    assert long.usage.prompt_tokens - short.usage.prompt_tokens > added


def test_tool_choice_errors_name_the_field(server):
    for body in (
        {"tool_choice": "required"},  # no tools
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
    ):
        r = httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": QUESTION, "max_tokens": 4, **body},
            timeout=60,
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "tool_choice"
