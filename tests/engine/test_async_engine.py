"""AsyncEngine: concurrent async generation, cancellation aborts and frees KV blocks."""

from __future__ import annotations

import asyncio

import pytest

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import InvalidParameterError, SamplingParams

pytestmark = pytest.mark.slow


PROMPTS = ["The sun is", "My favourite food is", "In 1492,", "Python is a"]
PARAMS = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)


@pytest.fixture(scope="module")
def offline_texts(llm) -> list[str]:
    """Computed before the AsyncEngine takes the shared engine over (it is not thread-safe)."""
    return [o.outputs[0].text for o in llm.generate(PROMPTS, PARAMS)]


@pytest.fixture
def async_engine(llm, offline_texts):
    engine = AsyncEngine(llm.engine)
    yield engine
    engine.shutdown()  # the shared LLMEngine stays usable for other tests


async def collect(engine: AsyncEngine, prompt: str, params: SamplingParams) -> tuple[str, list[str]]:
    deltas = []
    final = None
    async for out in engine.generate(prompt, params):
        deltas.append(out.outputs[0].delta)
        final = out
    return final.outputs[0].text, deltas


async def test_concurrent_requests_stream_and_match_offline(async_engine: AsyncEngine, offline_texts) -> None:
    results = await asyncio.gather(*(collect(async_engine, p, PARAMS) for p in PROMPTS))
    for text, deltas in results:
        assert "".join(deltas) == text
        assert len(deltas) > 1  # streamed, not delivered at once
    assert [t for t, _ in results] == offline_texts


async def test_cancellation_aborts_and_frees_blocks(async_engine: AsyncEngine) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    seen = asyncio.Event()

    async def consume() -> None:
        async for _ in async_engine.generate("Write a very long essay about the sea.", params):
            seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if async_engine.stats()["blocks_in_use"] == 0 and async_engine.stats()["num_running"] == 0:
            break
        await asyncio.sleep(0.05)
    assert async_engine.stats()["blocks_in_use"] == 0


async def test_bad_request_raises_before_queueing(async_engine: AsyncEngine) -> None:
    with pytest.raises(InvalidParameterError):
        async for _ in async_engine.generate([10**9], SamplingParams()):
            pass
    text, _ = await collect(async_engine, "Still serving?", SamplingParams(max_tokens=3))
    assert isinstance(text, str)


async def test_abort_all_ends_every_caller_with_shutdown_error(async_engine):
    from vivace.engine.async_engine import EngineShutdownError

    long = SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True)
    started = [asyncio.Event(), asyncio.Event()]  # one per caller: both must be added and producing

    async def consume(prompt: str, producing: asyncio.Event) -> int:
        seen = 0
        async for _ in async_engine.generate(prompt, long):
            seen += 1
            producing.set()
        return seen

    tasks = [asyncio.create_task(consume(p, e)) for p, e in zip(PROMPTS[:2], started, strict=True)]
    await asyncio.gather(*(event.wait() for event in started))
    assert await async_engine.abort_all("going down") == 2
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        assert isinstance(result, EngineShutdownError) and str(result) == "going down"
    assert async_engine.stats()["blocks_in_use"] == 0
    assert await async_engine.abort_all("again") == 0
    text, _ = await collect(async_engine, PROMPTS[0], PARAMS)  # still serving
    assert text


async def test_refuse_new_turns_new_requests_away_and_lets_running_ones_finish(async_engine):
    from vivace.engine.async_engine import EngineShutdownError

    running = async_engine.generate(PROMPTS[0], PARAMS)
    first = await running.__anext__()  # added and producing
    async_engine.refuse_new("closing")
    with pytest.raises(EngineShutdownError, match="closing"):
        async for _ in async_engine.generate(PROMPTS[1], PARAMS):
            pass
    last = first
    async for last in running:  # noqa: B007 (the last output is what is checked)
        pass
    assert last.finished and last.outputs[0].finish_reason == "length"


async def test_from_config_builds_and_steps_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """All torch work on the engine's own thread (see AsyncEngine.from_config for why)."""
    import threading

    from vivace.engine import async_engine as module
    from vivace.engine.config import EngineConfig

    threads: dict[str, threading.Thread] = {}
    real_init, real_step = module.LLMEngine.__init__, module.LLMEngine.step

    def init(self, config):
        threads["built"] = threading.current_thread()
        real_init(self, config)

    def step(self):
        threads["stepped"] = threading.current_thread()
        return real_step(self)

    monkeypatch.setattr(module.LLMEngine, "__init__", init)
    monkeypatch.setattr(module.LLMEngine, "step", step)
    engine = AsyncEngine.from_config(EngineConfig(model="random:tiny@0", kv_cache_memory_bytes=4 << 20))
    try:
        async for out in engine.generate([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)):  # noqa: B007 (the last output is checked)
            pass
        assert len(out.outputs[0].token_ids) == 3
    finally:
        engine.shutdown()
    assert threads["built"] is threads["stepped"] is not threading.main_thread()
    assert not threads["built"].is_alive()  # shutdown ends the thread


def test_from_config_raises_what_building_raised() -> None:
    from vivace.engine.config import EngineConfig

    with pytest.raises(InvalidParameterError, match="random-weight preset"):
        AsyncEngine.from_config(EngineConfig(model="random:no-such-shape"))


_EXIT_MID_STEP = """
import asyncio, atexit, threading
# Registered before vivace's own exit hook, so it runs after it (atexit is last in, first out).
atexit.register(lambda: print("engine loops alive at exit:", sum(
    t.name == "vivace-engine" and t.is_alive() for t in threading.enumerate())))
from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import EngineConfig, SamplingParams
engine = AsyncEngine.from_config(EngineConfig(kv_cache_memory_bytes=64 << 20))
async def main():
    params = SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True)
    first = asyncio.Event()
    async def stream():
        async for _ in engine.generate("Tell me a long story about the sea. " * 20, params):
            first.set()
    tasks = [asyncio.create_task(stream()) for _ in range(8)]
    await first.wait()
    await asyncio.sleep(0.5)
    print("left running:", sum(not t.done() for t in tasks), flush=True)
asyncio.run(main())  # returns while the engine is mid-generation; no shutdown()
"""


def test_a_program_exiting_mid_generation_without_shutdown_stops_the_loop_and_exits_cleanly() -> None:
    """The loop thread is stopped and joined before the interpreter finalizes: a daemon thread still
    stepping there is ended by pthread_exit inside torch's C++ frames, which aborted the process."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _EXIT_MID_STEP], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "left running: 8" in proc.stdout  # the exit came mid-generation
    assert "engine loops alive at exit: 0" in proc.stdout, proc.stdout
