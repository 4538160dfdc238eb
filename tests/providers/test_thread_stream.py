"""Blocking iterators consumed from asyncio: items in order, errors re-raised, early exit stops the producer."""

import asyncio
import threading
import time

import pytest

from vivace.providers.thread_stream import iterate_in_thread


async def test_items_arrive_in_order_and_errors_propagate():
    assert [x async for x in iterate_in_thread(lambda stop: iter(range(5)))] == [0, 1, 2, 3, 4]

    def failing(stop):
        yield 1
        raise KeyError("boom")

    got = []
    with pytest.raises(KeyError, match="boom"):
        async for x in iterate_in_thread(failing):
            got.append(x)
    assert got == [1]


async def test_leaving_early_stops_and_closes_the_producer():
    closed = threading.Event()
    produced = []

    def endless(stop):
        try:
            i = 0
            while not stop.is_set():
                produced.append(i)
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            closed.set()

    stream = iterate_in_thread(endless)
    assert await anext(stream) == 0
    await stream.aclose()
    assert await asyncio.to_thread(closed.wait, 5)
    count = len(produced)
    await asyncio.sleep(0.1)
    assert len(produced) == count  # nothing more after closing


_EXIT_MID_ITEM = """
import asyncio, atexit, threading
# Registered before vivace's own exit hook, so it runs after it (atexit is last in, first out).
atexit.register(lambda: print("workers alive at exit:", sum(
    t.name == "vivace-provider" and t.is_alive() for t in threading.enumerate())))
import torch
from vivace.providers.thread_stream import iterate_in_thread

def matmuls(stop):  # a native call per item, as a transformers or llama.cpp generate loop makes
    a = torch.randn(600, 600)
    while not stop.is_set():
        yield float((a @ a).sum())

async def main():
    stream = iterate_in_thread(matmuls)
    await anext(stream)
    print("got one", flush=True)

asyncio.run(main())  # the worker is still computing when the program ends
"""


def test_a_program_exiting_mid_stream_stops_the_worker_and_exits_cleanly():
    """The worker is stopped and joined before the interpreter finalizes: one still in a native call there
    is ended by pthread_exit inside C++ frames, which aborted the process (the `hf:` provider did)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _EXIT_MID_ITEM], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "got one" in proc.stdout
    assert "workers alive at exit: 0" in proc.stdout, proc.stdout


async def test_a_producer_failing_before_its_first_item_raises_on_the_callers_side():
    def refuses(stop):  # a plain function, not a generator: it raises when called
        raise PermissionError("no credentials")

    async def consume():
        return [x async for x in iterate_in_thread(refuses)]

    with pytest.raises(PermissionError, match="no credentials"):
        await asyncio.wait_for(consume(), timeout=30)
