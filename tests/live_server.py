"""A real uvicorn server on a free localhost port, in a daemon thread: what the live tests share."""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    """A localhost port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_uvicorn(app) -> tuple[object, threading.Thread, str]:
    """Serve `app` on a free port in a daemon thread; returns (server, thread, base URL)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def stop_uvicorn(server, thread) -> None:
    """Ask the server to exit and wait for its thread."""
    server.should_exit = True
    thread.join(timeout=10)
