"""A real vivace server on a free localhost port for the end-to-end bench tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.server.conftest import _start

MODEL = "smollm2-bench"


@dataclass
class Live:
    url: str  # http://127.0.0.1:PORT (no /v1)
    engine: object


@pytest.fixture(scope="session")
def live():
    """The packaged model (cheap deterministic configuration) served over HTTP for the session."""
    from vivace.engine.async_engine import AsyncEngine
    from vivace.engine.llm import LLM
    from vivace.server.app import create_app

    llm = LLM(kv_cache_memory_bytes=64 << 20, max_model_len=512, quantization="none")
    engine = AsyncEngine(llm.engine)
    server, thread, url = _start(create_app(engine, MODEL))
    yield Live(url, engine)
    server.should_exit = True
    thread.join(timeout=10)
    engine.shutdown()
