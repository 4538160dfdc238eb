"""One real uvicorn server on a free localhost port, shared by the server tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.live_server import start_uvicorn as _start
from vivace.engine.config import SamplingParams

MODEL = "smollm2-test"
API_KEY = "test-key"
MAX_MODEL_LEN = 512
GREEDY_PROMPT = "The capital of France is"
GREEDY_MESSAGES = [{"role": "user", "content": "Name three colours."}]
GREEDY_TOKENS = 12


@dataclass
class Server:
    base_url: str
    engine: object
    offline: dict[str, str]  # greedy reference texts, computed before serving


@pytest.fixture(scope="session")
def served():
    """The packaged model behind two apps (open, and with an API key) on one AsyncEngine."""
    from vivace.engine.async_engine import AsyncEngine
    from vivace.engine.llm import LLM
    from vivace.server.app import create_app

    # float32 weights: the int8 CPU mode's greedy output can change once a prompt's prefix is cached
    # (the KV cache is stored in bfloat16), which would make server-vs-offline comparisons flaky.
    llm = LLM(kv_cache_memory_bytes=64 << 20, max_model_len=MAX_MODEL_LEN, quantization="none")
    greedy = SamplingParams(temperature=0.0, max_tokens=GREEDY_TOKENS)
    offline = {
        "completion": llm.generate(GREEDY_PROMPT, greedy, use_tqdm=False)[0].outputs[0].text,
        "chat": llm.chat(GREEDY_MESSAGES, greedy, use_tqdm=False)[0].outputs[0].text,
    }
    engine = AsyncEngine(llm.engine)  # takes the engine over from here on
    open_server, open_thread, open_url = _start(create_app(engine, MODEL))
    keyed_server, keyed_thread, keyed_url = _start(create_app(engine, MODEL, api_key=API_KEY, max_body_bytes=4096))
    yield Server(open_url, engine, offline), Server(keyed_url, engine, offline)
    for server, thread in ((open_server, open_thread), (keyed_server, keyed_thread)):
        server.should_exit = True
        thread.join(timeout=10)
    engine.shutdown()


@pytest.fixture(scope="session")
def server(served) -> Server:
    return served[0]


@pytest.fixture(scope="session")
def keyed_server(served) -> Server:
    return served[1]
