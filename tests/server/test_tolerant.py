"""Tolerant requests, as vLLM's server is: unknown fields ignored and reported, vLLM's extensions honoured."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import openai
import pytest

from tests.server.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS, MODEL
from vivace.engine.chat_continuation import render_continuation
from vivace.server.tolerant import IGNORED_FIELDS_HEADER

pytestmark = pytest.mark.slow

GREEDY = {"max_tokens": GREEDY_TOKENS, "temperature": 0}


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=60)


def sse_chunks(server, path: str, body: dict) -> tuple[httpx.Response, list[dict]]:
    with httpx.stream("POST", server.base_url + path, json={**body, "stream": True}, timeout=60) as response:
        raw = response.read().decode()
    events = [e[len("data: ") :] for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]", raw
    return response, [json.loads(e) for e in events[:-1]]


def test_unknown_fields_are_ignored_and_listed_in_a_header(server):
    body = {
        "model": MODEL,
        "prompt": GREEDY_PROMPT,
        **GREEDY,
        "vllm_xargs": {"a": 1},
        "priority": 0,
        "stream_options": {"include_usage": True, "made_up": 1},
    }
    response = post(server, "/v1/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == server.offline["completion"]  # nothing else changed
    assert response.headers[IGNORED_FIELDS_HEADER] == "vllm_xargs, priority, stream_options.made_up"


def test_nested_message_fields_are_reported_and_a_clean_body_gets_no_header(server):
    messages = [{**GREEDY_MESSAGES[0], "cache_control": {"type": "ephemeral"}}]
    response = post(server, "/v1/chat/completions", {"model": MODEL, "messages": messages, **GREEDY})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == server.offline["chat"]
    assert response.headers[IGNORED_FIELDS_HEADER] == "messages.cache_control"
    clean = post(server, "/v1/chat/completions", {"model": MODEL, "messages": GREEDY_MESSAGES, **GREEDY})
    assert IGNORED_FIELDS_HEADER not in clean.headers


def test_streamed_responses_carry_the_header_too(server):
    response, _ = sse_chunks(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 2, "x_unknown": True})
    assert response.headers[IGNORED_FIELDS_HEADER] == "x_unknown"


def test_each_ignored_name_is_logged_once(server, caplog):
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 1, "logged_once_field": 1}
    with caplog.at_level(logging.WARNING, logger="vivace.server.tolerant"):
        for _ in range(3):
            assert post(server, "/v1/completions", body).status_code == 200
    assert sum("logged_once_field" in r.getMessage() for r in caplog.records) == 1


def test_odd_field_names_are_escaped_in_the_header(server):
    body = {"prompt": "Hi", "max_tokens": 1, "é\nx": 1, **{f"junk{i}": i for i in range(40)}}
    response = post(server, "/v1/completions", body)
    assert response.status_code == 200
    header = response.headers[IGNORED_FIELDS_HEADER]
    assert header.startswith("\\u00e9\\nx, junk0, ") and header.endswith("... (9 more)")


def test_blank_spaced_and_comma_names_are_quoted_in_the_header(server):
    body = {"prompt": "Hi", "max_tokens": 1, "best_of": 1, "": 1, " text ": 2, "a,b": 3}
    response = post(server, "/v1/completions", body)
    assert response.status_code == 200
    assert response.headers[IGNORED_FIELDS_HEADER] == '"", " text ", "a,b"'


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/completions", "best_of", 2),
        ("/v1/completions", "use_beam_search", True),
        ("/v1/completions", "echo", True),
        ("/v1/completions", "suffix", "end"),
        ("/v1/chat/completions", "best_of", 3),
    ],
)
def test_known_fields_that_cannot_be_honoured_are_400s_naming_them(server, path, field, value):
    base = {"prompt": "Hi"} if path == "/v1/completions" else {"messages": GREEDY_MESSAGES}
    response = post(server, path, {**base, "max_tokens": 1, field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field


def test_model_may_be_omitted(server):
    response = post(server, "/v1/completions", {"prompt": GREEDY_PROMPT, **GREEDY})
    assert response.status_code == 200
    assert response.json()["model"] == MODEL
    assert response.json()["choices"][0]["text"] == server.offline["completion"]


def test_developer_role_reads_as_system(server):
    def run(role: str) -> dict:
        messages = [{"role": role, "content": "Answer in French."}, *GREEDY_MESSAGES]
        return post(server, "/v1/chat/completions", {"messages": messages, **GREEDY}).json()

    developer, system = run("developer"), run("system")
    assert developer["usage"]["prompt_tokens"] == system["usage"]["prompt_tokens"]
    # The second request found the whole first prompt cached: the two prompts are the same tokens.
    assert system["usage"]["prompt_tokens_details"]["cached_tokens"] >= system["usage"]["prompt_tokens"] - 16
    assert developer["choices"][0]["message"] == system["choices"][0]["message"]


def test_continuous_usage_stats_put_usage_so_far_on_every_chunk(server):
    body = {
        "prompt": GREEDY_PROMPT,
        **GREEDY,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    _, chunks = sse_chunks(server, "/v1/completions", body)
    assert all("usage" in c for c in chunks)
    completion = [c["usage"]["completion_tokens"] for c in chunks]
    assert completion == sorted(completion) and completion[-1] == GREEDY_TOKENS
    assert {c["usage"]["prompt_tokens"] for c in chunks} == {chunks[-1]["usage"]["prompt_tokens"]}
    assert all(
        c["usage"]["total_tokens"] == c["usage"]["prompt_tokens"] + c["usage"]["completion_tokens"] for c in chunks
    )
    # Each text chunk's count covers the text sent so far.
    text_chunks = [c for c in chunks if c["choices"]]
    assert text_chunks[0]["usage"]["completion_tokens"] >= 1
    plain_body = {**body, "stream_options": {"include_usage": True}}
    _, plain = sse_chunks(server, "/v1/completions", plain_body)
    assert ["usage" in c for c in plain] == [False] * (len(plain) - 1) + [True]


def test_continue_final_message_continues_the_assistant_turn(server):
    tokenizer = server.engine.tokenizer
    messages = [{"role": "user", "content": "Tell a story."}, {"role": "assistant", "content": "Once upon a"}]
    body = {"messages": messages, **GREEDY, "continue_final_message": True, "add_generation_prompt": False}
    response = post(server, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    expected_prompt = tokenizer.encode(render_continuation(tokenizer, messages), add_special_tokens=False)
    assert response.json()["usage"]["prompt_tokens"] == len(expected_prompt)
    # Same prompt as a raw completion of that text: the same greedy continuation.
    raw = post(server, "/v1/completions", {"prompt": expected_prompt, **GREEDY}).json()
    assert response.json()["choices"][0]["message"]["content"] == raw["choices"][0]["text"]


def test_add_generation_prompt_false_leaves_the_assistant_header_off(server):
    tokenizer = server.engine.tokenizer
    body = {"messages": GREEDY_MESSAGES, "max_tokens": 1, "add_generation_prompt": False}
    usage = post(server, "/v1/chat/completions", body).json()["usage"]
    assert usage["prompt_tokens"] == len(tokenizer.encode_chat(GREEDY_MESSAGES, add_generation_prompt=False))


@pytest.mark.parametrize(
    "extra",
    [
        {"continue_final_message": True},  # add_generation_prompt defaults to true
        {"continue_final_message": True, "add_generation_prompt": False, "messages": GREEDY_MESSAGES},
    ],
)
def test_continue_final_message_misuse_is_a_400(server, extra):
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    response = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 1, **extra})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "continue_final_message"


async def test_a_vllm_benchmark_client_gets_no_errors(server):
    """The bodies vLLM's serving benchmark sends (its completions and chat backends), concurrently."""
    completions_body = {
        "model": MODEL,
        "prompt": "Write a poem about the sea.",
        "temperature": 0.0,
        "repetition_penalty": 1.0,
        "best_of": 1,
        "use_beam_search": False,
        "max_tokens": 8,
        "logprobs": None,
        "ignore_eos": True,
        "top_k": -1,
        "top_p": 1.0,
        "min_p": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    chat_body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Write a poem about the sea."}]}],
        "temperature": 0.0,
        "max_completion_tokens": 8,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }

    async def one(client: httpx.AsyncClient, path: str, body: dict) -> int:
        tokens = 0
        async with client.stream("POST", server.base_url + path, json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[len("data: ") :])
                    assert "error" not in chunk, chunk
                    tokens = chunk["usage"]["completion_tokens"]
        return tokens

    async with httpx.AsyncClient(timeout=120) as client:
        counts = await asyncio.gather(
            *(one(client, "/v1/completions", completions_body) for _ in range(6)),
            *(one(client, "/v1/chat/completions", chat_body) for _ in range(6)),
        )
    assert counts == [8] * 12  # ignore_eos honoured, usage counted on the last chunk

    # The official SDK with vLLM's extensions passed the way its users pass them.
    client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "top_k": -1, "min_tokens": 4, "vllm_only_option": {"x": 1}},
    )
    usage = [chunk.usage async for chunk in stream if chunk.usage]
    await client.close()
    assert usage[-1].completion_tokens == 4
