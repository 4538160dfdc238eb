"""Daemon threads that are stopped and joined when the interpreter exits, before it finalizes.

A finalizing interpreter ends a daemon thread that takes the GIL with pthread_exit. A thread takes it as
a native call returns (a torch op, llama.cpp) or in a C++ destructor (torch's deleter of numpy-backed
storage, when the thread drops a tensor's last reference); the forced unwinding through those C++ frames
then aborts the process ("terminate called without an active exception"). atexit hooks run before
finalization: the one here asks every thread started through `start_daemon` to stop and joins it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable

# Running threads and how to stop each. A thread leaves when its target returns.
_running: dict[threading.Thread, Callable[[], None]] = {}
_lock = threading.Lock()
_JOIN_SECONDS = 5.0  # per thread; a target is expected to return within one unit of its work of `stop`


def start_daemon(target: Callable[[], None], name: str, stop: Callable[[], None]) -> threading.Thread:
    """Run `target` on a new daemon thread. At interpreter exit, while the thread still runs, `stop()` is
    called (it must make `target` return soon, e.g. by setting an event the target checks) and the thread
    is joined."""

    def run() -> None:
        try:
            target()
        finally:
            with _lock:
                _running.pop(threading.current_thread(), None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _lock:
        _running[thread] = stop
    thread.start()
    return thread


def _stop_all() -> None:
    with _lock:
        running = list(_running.items())
    for _, stop in running:  # every thread asked first, so they wind down together
        stop()
    for thread, _ in running:
        thread.join(timeout=_JOIN_SECONDS)


atexit.register(_stop_all)
