"""Blocking iterators (llama.cpp, transformers, boto3) consumed from asyncio through a worker thread."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()
# Worker threads still running and the event that stops each: stopped and joined at interpreter exit.
_workers: dict[threading.Thread, threading.Event] = {}
_workers_lock = threading.Lock()


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
        try:
            try:
                items = produce(stop)
            except BaseException as exc:  # noqa: BLE001 - a producer that fails before its first item
                put(_END, exc)
                return
            try:
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
        finally:
            with _workers_lock:
                _workers.pop(threading.current_thread(), None)

    worker = threading.Thread(target=run, name=name, daemon=True)
    with _workers_lock:
        _workers[worker] = stop
    worker.start()
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


def _stop_workers_at_exit() -> None:
    """Stop the worker threads a program left running, before the interpreter finalizes (atexit runs
    first): a finalizing interpreter ends a daemon thread that takes the GIL with pthread_exit, and a
    worker takes it as a native call returns (a torch op, llama.cpp), inside C++ frames whose unwinding
    then aborts the process ("terminate called without an active exception")."""
    with _workers_lock:
        running = list(_workers.items())
    for _, stop in running:
        stop.set()
    for worker, _ in running:
        worker.join(timeout=5.0)  # a producer checks `stop` between items


atexit.register(_stop_workers_at_exit)
