"""A real vivace server on a free localhost port for the end-to-end bench tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.live_server import start_uvicorn, stop_uvicorn

MODEL = "smollm2-bench"


@dataclass
class Live:
    url: str  # http://127.0.0.1:PORT (no /v1)
    engine: object


@pytest.fixture(scope="session")
def live(serving_engine):
    """The session's serving engine served over HTTP."""
    from vivace.server.app import create_app

    server, thread, url = start_uvicorn(create_app(serving_engine.engine, MODEL))
    yield Live(url, serving_engine.engine)
    stop_uvicorn(server, thread)
