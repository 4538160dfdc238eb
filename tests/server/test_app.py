"""End-to-end through a real server: the official openai SDK, sync and async, streaming and not."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.server.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS, MODEL

pytestmark = pytest.mark.slow


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_health_and_models(server, client):
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_greedy_matches_offline_engine(server, client):
    reply = client.chat.completions.create(
        model=MODEL, messages=GREEDY_MESSAGES, temperature=0, max_tokens=GREEDY_TOKENS
    )
    assert reply.object == "chat.completion"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == server.offline["chat"]
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= GREEDY_TOKENS
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_completion_greedy_matches_offline_engine(server, client):
    reply = client.completions.create(model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=GREEDY_TOKENS)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == server.offline["completion"]


def test_chat_stream_matches_non_stream(server, client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=GREEDY_MESSAGES,
        temperature=0,
        max_tokens=GREEDY_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == server.offline["chat"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_n_choices_and_length(client):
    reply = client.chat.completions.create(model=MODEL, messages=GREEDY_MESSAGES, n=3, max_tokens=4, seed=1)
    assert sorted(c.index for c in reply.choices) == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in reply.choices)
    assert reply.usage.completion_tokens <= 12


def test_completion_list_of_prompts_and_token_ids(client):
    reply = client.completions.create(model=MODEL, prompt=["Hello", "Goodbye"], n=2, max_tokens=3, temperature=0)
    assert sorted(c.index for c in reply.choices) == [0, 1, 2, 3]
    assert all(c.finish_reason in ("stop", "length") for c in reply.choices)
    assert reply.choices[0].text == reply.choices[1].text  # greedy: both choices of one prompt agree
    by_ids = client.completions.create(model=MODEL, prompt=[[1, 2, 3], [4, 5]], max_tokens=3, temperature=0)
    assert sorted(c.index for c in by_ids.choices) == [0, 1]
    assert by_ids.usage.prompt_tokens == 5


def test_stop_string_and_max_completion_tokens(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=GREEDY_MESSAGES, temperature=0, max_completion_tokens=GREEDY_TOKENS, stop=["\n"]
    )
    assert "\n" not in reply.choices[0].message.content


def test_chat_logprobs(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=GREEDY_MESSAGES, temperature=0, max_tokens=4, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)  # greedy picks the top


def test_completion_logprobs(client):
    reply = client.completions.create(model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=3, logprobs=1)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == reply.choices[0].text


def test_prompt_logprobs_score_what_decoding_produced(server, client):
    """vLLM's prompt_logprobs: scoring prompt + a generated token gives back that token's own logprob."""
    first = client.completions.create(model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=1, logprobs=0)
    text = GREEDY_PROMPT + first.choices[0].text
    reply = httpx.post(
        str(client.base_url) + "completions",
        json={"model": MODEL, "prompt": text, "max_tokens": 1, "prompt_logprobs": 2},
    ).json()
    scored = reply["choices"][0]["prompt_logprobs"]
    assert len(scored) == reply["usage"]["prompt_tokens"]
    assert scored[0] is None
    ids = server.engine.engine.tokenize_prompt(text)
    assert [int(next(iter(entry))) for entry in scored[1:]] == ids[1:]  # the chosen token comes first
    for entry in scored[1:]:
        (_, chosen), *alternatives = entry.items()
        assert chosen["logprob"] <= 0 and chosen["rank"] >= 1
        assert len(alternatives) <= 2 and all(v["rank"] in (1, 2) for _, v in alternatives)
        assert chosen["rank"] > 2 or len(entry) == 2  # the chosen token is one of the top 2 or beside them
    (_, last), *_ = scored[-1].items()
    assert last["logprob"] == pytest.approx(first.choices[0].logprobs.token_logprobs[0], abs=2e-3)
    assert last["rank"] == 1  # greedy decoding picked the most likely token


def test_prompt_logprobs_with_stream_is_refused_by_name(server):
    reply = httpx.post(
        server.base_url + "/v1/completions",
        json={"model": MODEL, "prompt": "Hi", "max_tokens": 1, "prompt_logprobs": 1, "stream": True},
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "prompt_logprobs"


async def test_async_client_stream_and_not(server, aclient):
    reply = await aclient.completions.create(model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=GREEDY_TOKENS)
    assert reply.choices[0].text == server.offline["completion"]
    stream = await aclient.completions.create(
        model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=GREEDY_TOKENS, stream=True
    )
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == server.offline["completion"]
    chat = await aclient.chat.completions.create(
        model=MODEL, messages=GREEDY_MESSAGES, temperature=0, max_tokens=GREEDY_TOKENS, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in chat if c.choices]) == server.offline["chat"]


async def test_concurrent_requests_match_offline(server, aclient):
    async def one(stream: bool) -> str:
        if not stream:
            reply = await aclient.completions.create(
                model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=GREEDY_TOKENS
            )
            return reply.choices[0].text
        chunks = await aclient.completions.create(
            model=MODEL, prompt=GREEDY_PROMPT, temperature=0, max_tokens=GREEDY_TOKENS, stream=True
        )
        return "".join([c.choices[0].text async for c in chunks if c.choices])

    texts = await asyncio.gather(*(one(i % 2 == 0) for i in range(6)))
    assert texts == [server.offline["completion"]] * 6
    assert server.engine.stats()["blocks_in_use"] == 0
