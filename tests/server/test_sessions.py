"""Sessions over a real server with the official openai client: `session_id` (or `user`) pins a conversation's
KV blocks, the next turn finds its history cached, and /metrics shows the pins and the session tier."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.conftest import make_test_llm
from tests.live_server import start_uvicorn, stop_uvicorn

MODEL = "smollm2-sessions"
HISTORY = "A conversation about rivers: the Danube flows east through Vienna and Budapest to the Black Sea."
OTHER = "Ten garden vegetables and the month each one is planted in, one per line: carrots, beans, peas,"


@dataclass
class SessionServer:
    url: str
    engine: object


@pytest.fixture(scope="module")
def session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionServer]:
    from vivace.engine.async_engine import AsyncEngine
    from vivace.server.app import create_app

    # Six blocks: one unrelated prompt evicts an unpinned history.
    llm = make_test_llm(
        kv_cache_memory_bytes=6 * 16 * 46080,
        max_model_len=96,
        attention_backend="torch",
        session_ttl=600.0,
        kv_tier_bytes=32 << 20,
        kv_tier_path=str(tmp_path_factory.mktemp("tier") / "tier"),
    )
    engine = AsyncEngine(llm.engine)
    server, thread, url = start_uvicorn(create_app(engine, MODEL))
    yield SessionServer(url, engine)
    stop_uvicorn(server, thread)
    engine.shutdown()


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(rf"^{name}(?:_total)?{{[^}}]*}} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match[1])


def complete(url: str, prompt: str, **extra) -> openai.types.Completion:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    return client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0, **extra)


def test_session_id_pins_the_conversation_across_pressure(session_server: SessionServer) -> None:
    url = session_server.url
    first = complete(url, HISTORY, extra_body={"session_id": "conv-1"})
    assert metric(url, "vivace_session_pinned_blocks") >= 1
    complete(url, OTHER)  # would evict the history's blocks without the pin
    second = complete(url, HISTORY + first.choices[0].text + " And", extra_body={"session_id": "conv-1"})
    assert second.usage.prompt_tokens_details.cached_tokens >= 16
    assert metric(url, "vivace_kv_tier_capacity_bytes") > 0
    # Between requests, the only blocks held are the session's.
    assert metric(url, "vivace_kv_blocks_in_use") == metric(url, "vivace_session_pinned_blocks") >= 1


def test_user_field_is_a_session_too(session_server: SessionServer) -> None:
    url = session_server.url
    before = metric(url, "vivace_session_pinned_blocks")
    complete(url, "Another conversation, about mountains: the Alps stretch across eight countries.", user="alice")
    assert metric(url, "vivace_session_pinned_blocks") > before
