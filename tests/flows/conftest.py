"""The session's serving engine for the flow tests, and a real uvicorn server serving flows over it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.live_server import start_uvicorn as _start
from tests.live_server import stop_uvicorn
from vivace.flows.loader import loads_flow
from vivace.flows.model import Flow

MODEL = "smollm2-flows"

# Fan-out test flow: a -> (b, c, each) -> d; few tokens per step so the tests stay quick.
FANOUT_YAML = """
name: fanout
inputs:
  topic: {default: tea}
  things: {default: "apples, pears, plums"}
defaults: {max_tokens: 6, temperature: 0.8, seed: 3}
steps:
  a: {prompt: "Say one word about {{ topic }}."}
  b: {prompt: "Expand on: {{ a }}"}
  c: {prompt: "Contradict: {{ a }}"}
  each: {for_each: "things | items", prompt: "Describe {{ item }} (number {{ index }}) with {{ a }}."}
  d: {prompt: "Summarise {{ b }} and {{ c }}."}
"""


@dataclass
class Served:
    base_url: str
    engine: object
    flows: dict[str, Flow]


@pytest.fixture(scope="session")
def engine(serving_engine):
    """The session's serving engine: float32 (results independent of batching), small KV pool."""
    return serving_engine.engine


@pytest.fixture
def pool(engine):
    """Providers for one test: `local:` is the shared engine."""
    from vivace.flows.pool import ProviderPool
    from vivace.providers.local import LocalProvider

    return ProviderPool({"local:": LocalProvider(engine)})


@pytest.fixture
def fanout() -> Flow:
    return loads_flow(FANOUT_YAML)


@pytest.fixture(scope="session")
def served(engine):
    """A real server on a free port with the fan-out flow and the packaged recipe flow."""
    from vivace.flows.loader import examples_dir, load_flows
    from vivace.server.app import create_app

    flows = {**load_flows(examples_dir()), "fanout": loads_flow(FANOUT_YAML)}
    server, thread, url = _start(create_app(engine, MODEL, flows=flows))
    yield Served(url, engine, flows)
    stop_uvicorn(server, thread)


def wait_for_free_blocks(engine, timeout: float = 10.0) -> int:
    """Poll until the engine holds no KV blocks (or time runs out); the last blocks_in_use seen."""
    deadline = time.monotonic() + timeout
    while True:
        in_use = engine.stats()["blocks_in_use"]
        if in_use == 0 or time.monotonic() > deadline:
            return in_use
        time.sleep(0.05)
