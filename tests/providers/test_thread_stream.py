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
