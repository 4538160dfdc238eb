"""Blocking iterators (llama.cpp, transformers, boto3) consumed from asyncio through a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from vivace.daemon_threads import start_daemon

T = TypeVar("T")
_END = object()


async def iterate_in_thread(
    produce: Callable[[threading.Event], Iterator[T]], name: str = "vivace-provider"
) -> AsyncIterator[T]:
    """Run `produce(stop)` on a thread and yield its items; leaving early sets `stop` and closes the iterator.

    `produce` should check `stop` between items when one item can take long (a generate loop does).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the caller's loop has closed: nobody is listening
            stop.set()

    def run() -> None:
        items = None  # stays None if `produce` raises when called, before its first item
        try:
            items = produce(stop)
            for item in items:
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's side
            put(_END, exc)
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put(_END)

    start_daemon(run, name, stop.set)  # at interpreter exit too: a producer checks `stop` between items
    try:
        while True:
            item, error = await queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
