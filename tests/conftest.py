"""The one small test engine every test package builds on: the packaged model, float32, a small KV pool.

`make_test_llm` is that engine's configuration (the engine tests take it with the model's full
context); `serving_engine` is one AsyncEngine on it, shared for the whole session by the server,
provider, flow and bench tests, which each put their own app in front of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the engine pulls in torch; test modules that never need it stay light
    from vivace.engine.async_engine import AsyncEngine
    from vivace.engine.llm import LLM
    from vivace.engine.outputs import RequestOutput

# Small KV budget: tests never need more, and allocation stays quick.
TEST_KV_BYTES = 64 << 20
# The served engine's context: short keeps the KV pool's blocks per sequence small.
SERVED_MAX_MODEL_LEN = 512
# Greedy references the serving tests compare against (computed offline, before serving starts).
GREEDY_PROMPT = "The capital of France is"
GREEDY_MESSAGES = [{"role": "user", "content": "Name three colours."}]
GREEDY_TOKENS = 12


def make_test_llm(**engine_options: Any) -> LLM:
    """The packaged model as the tests run it; `engine_options` override EngineConfig fields.

    float32 weights (no int8): the int8 CPU mode's greedy output can change once a prompt's prefix
    is cached (its KV cache is stored in float16), which would make comparisons with offline runs
    or transformers flaky.
    """
    from vivace.engine.llm import LLM

    return LLM(**{"kv_cache_memory_bytes": TEST_KV_BYTES, "quantization": "none", **engine_options})


@dataclass
class ServingEngine:
    engine: AsyncEngine  # owns the LLM's engine from its creation on
    tokenizer: Any
    offline: dict[str, RequestOutput]  # "completion" and "chat": GREEDY_* run offline before serving


@pytest.fixture(scope="session")
def serving_engine() -> Iterator[ServingEngine]:
    """One AsyncEngine (SERVED_MAX_MODEL_LEN context) for every live-server test of the session."""
    from vivace.engine.async_engine import AsyncEngine
    from vivace.engine.config import SamplingParams

    llm = make_test_llm(max_model_len=SERVED_MAX_MODEL_LEN)
    greedy = SamplingParams(temperature=0.0, max_tokens=GREEDY_TOKENS)
    offline = {
        "completion": llm.generate(GREEDY_PROMPT, greedy, use_tqdm=False)[0],
        "chat": llm.chat(GREEDY_MESSAGES, greedy, use_tqdm=False)[0],
    }
    engine = AsyncEngine(llm.engine)  # takes the engine over from here on
    yield ServingEngine(engine, llm.tokenizer, offline)
    engine.shutdown()
