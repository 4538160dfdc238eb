"""The SSE wire format byte by byte, errors after streaming began, and disconnects freeing KV blocks."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.server.conftest import GREEDY_PROMPT, GREEDY_TOKENS, MODEL
from vivace.engine.outputs import CompletionOutput, RequestOutput
from vivace.server.shapes import CHAT, TEXT, ResponseMeta
from vivace.server.streaming import DONE, sse, sse_events


def _events(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n")
    events = raw.split(b"\n\n")[:-1]
    for event in events:
        assert event.startswith(b"data: ") and b"\n" not in event
    return [e[len(b"data: ") :] for e in events]


@pytest.mark.slow
def test_completion_wire_format(server):
    body = {
        "model": MODEL,
        "prompt": GREEDY_PROMPT,
        "max_tokens": GREEDY_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    events = _events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["model"] == MODEL for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == server.offline["completion"]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.slow
def test_chat_wire_format_n2_without_usage(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "n": 2, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        raw = response.read()
    events = _events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"] == [
        {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        for i in (0, 1)
    ]
    finished = [ch["index"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert sorted(finished) == [0, 1]
    assert all("usage" not in c for c in chunks)


@pytest.mark.slow
def test_disconnect_mid_stream_frees_kv_blocks(server):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "stream": True, "seed": 3}
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                break
        assert server.engine.stats()["blocks_in_use"] > 0
    assert _wait_for_free_blocks(server) == 0
    stats = server.engine.stats()
    assert stats["num_running"] == stats["num_waiting"] == 0


@pytest.mark.slow
def test_disconnect_while_waiting_for_a_non_streamed_reply_frees_kv_blocks(server):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "seed": 4}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    assert _wait_for_free_blocks(server) == 0


def _wait_for_free_blocks(server) -> int:
    deadline = time.monotonic() + 10
    while server.engine.stats()["blocks_in_use"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.engine.stats()["blocks_in_use"]


@pytest.mark.slow
def test_server_still_serves_after_disconnect(server):
    body = {"model": MODEL, "prompt": GREEDY_PROMPT, "max_tokens": GREEDY_TOKENS, "temperature": 0}
    assert (
        httpx.post(server.base_url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        == server.offline["completion"]
    )


# ---- without a model: the event generator over scripted engine outputs ---------------------------


def _output(text: str, delta: str, finish: str | None, error: str | None = None) -> RequestOutput:
    completion = CompletionOutput(index=0, text=text, delta=delta, token_ids=[1] * len(text), finish_reason=finish)
    return RequestOutput("r", None, [1, 2], [completion], finished=finish is not None, error=error)


async def _scripted(outputs: list[RequestOutput]):
    for out in outputs:
        yield out


async def _collect(meta, outputs: list[RequestOutput], include_usage: bool = False) -> list[bytes]:
    primed = [(outputs[0], _scripted(outputs[1:]))]
    return [e async for e in sse_events(meta, primed, None, include_usage)]


async def test_error_after_streaming_began_is_the_last_event():
    meta = ResponseMeta("cmpl-1", 0, MODEL, TEXT, 1)
    events = await _collect(meta, [_output("a", "a", None), _output("a", "", "error", error="RuntimeError: boom")])
    assert events[0] == sse(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "text": "a", "logprobs": None, "finish_reason": None}],
        }
    )
    last = json.loads(events[-1][len(b"data: ") :])
    assert "boom" in last["error"]["message"] and last["error"]["type"] == "server_error"
    assert DONE not in events


async def test_chat_chunks_then_usage_then_done():
    meta = ResponseMeta("chatcmpl-1", 0, MODEL, CHAT, 1)
    events = await _collect(meta, [_output("He", "He", None), _output("Hello", "llo", "length")], include_usage=True)
    bodies = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
    assert events[-1] == DONE
    assert [b["choices"][0]["delta"] for b in bodies[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "He"},
        {"content": "llo"},
    ]
    assert bodies[2]["choices"][0]["finish_reason"] == "length"
    assert bodies[3]["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 5,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
