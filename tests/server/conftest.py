"""Two real uvicorn servers (open, and with an API key) on free localhost ports, shared by the server tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

# GREEDY_*: re-exported, the server tests import them from here.
from tests.conftest import GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS, SERVED_MAX_MODEL_LEN  # noqa: F401
from tests.live_server import start_uvicorn as _start
from tests.live_server import stop_uvicorn

MODEL = "smollm2-test"
API_KEY = "test-key"
MAX_MODEL_LEN = SERVED_MAX_MODEL_LEN


@dataclass
class Server:
    base_url: str
    engine: object
    offline: dict[str, str]  # greedy reference texts, computed before serving


@pytest.fixture(scope="session")
def served(serving_engine):
    """The session's serving engine behind two apps: open, and with an API key and a small body limit."""
    from vivace.server.app import create_app

    engine = serving_engine.engine
    offline = {kind: out.outputs[0].text for kind, out in serving_engine.offline.items()}
    open_server, open_thread, open_url = _start(create_app(engine, MODEL))
    keyed_server, keyed_thread, keyed_url = _start(create_app(engine, MODEL, api_key=API_KEY, max_body_bytes=4096))
    yield Server(open_url, engine, offline), Server(keyed_url, engine, offline)
    stop_uvicorn(open_server, open_thread)
    stop_uvicorn(keyed_server, keyed_thread)


@pytest.fixture(scope="session")
def server(served) -> Server:
    return served[0]


@pytest.fixture(scope="session")
def keyed_server(served) -> Server:
    return served[1]
