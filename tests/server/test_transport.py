"""Transport limits on a real socket: slow-loris clients are cut off, a connection cap holds, /health answers."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.live_server import free_port
from tests.server.conftest import MODEL

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def guarded(server):
    """The shared engine behind uvicorn with short read deadlines and a small connection cap."""
    import uvicorn

    from vivace.server.app import create_app
    from vivace.server.transport import TransportLimits, guarded_protocol

    limits = TransportLimits(MAX_CONNECTIONS, HEADER_TIMEOUT, BODY_TIMEOUT)
    port = free_port()
    config = uvicorn.Config(
        create_app(server.engine, MODEL),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=guarded_protocol(limits),
    )
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    while not uvicorn_server.started:
        time.sleep(0.05)
    yield port, f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


def _closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `within` seconds, and what it sent before closing."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_slow_loris_headers_are_cut_off_and_health_answers(guarded):
    port, base = guarded
    loris = []
    for _ in range(MAX_CONNECTIONS // 2):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")  # never finishes its headers
        loris.append(sock)
    started = time.monotonic()
    assert httpx.get(base + "/health", timeout=5).status_code == 200  # answered while they hang
    for sock in loris:
        closed, received = _closed_by_server(sock, HEADER_TIMEOUT + 5)
        assert closed and received.startswith(b"HTTP/1.1 408")
        sock.close()
    assert time.monotonic() - started < HEADER_TIMEOUT + 5


def test_a_connection_that_sends_nothing_is_closed(guarded):
    port, _ = guarded
    with socket.create_connection(("127.0.0.1", port)) as sock:
        closed, _ = _closed_by_server(sock, HEADER_TIMEOUT + 5)
        assert closed


def test_slow_body_is_cut_off_as_a_client_gone(guarded, server):
    port, base = guarded
    head = "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode() + b'{"model": ')
        sent_at = time.monotonic()
        closed = False
        while not closed and time.monotonic() - sent_at < BODY_TIMEOUT + 5:
            try:
                sock.sendall(b" ")  # a byte now and then: never idle, never done
            except OSError:
                closed = True
                break
            closed, _ = _closed_by_server(sock, 0.3)
        assert closed
        assert BODY_TIMEOUT - 0.5 <= time.monotonic() - sent_at < BODY_TIMEOUT + 5
    metrics = httpx.get(base + "/metrics").text
    assert 'status="500"' not in metrics


def test_connections_past_the_cap_are_refused_at_once_then_served_again(guarded):
    port, base = guarded
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # every one accepted
        with socket.create_connection(("127.0.0.1", port)) as extra:
            closed, received = _closed_by_server(extra, 2)
            assert closed and received.startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_slowly_read_stream_and_an_idle_kept_alive_connection_are_not_cut(guarded):
    _, base = guarded
    body = {"model": MODEL, "prompt": "Count:", "max_tokens": 8, "ignore_eos": True, "stream": True, "temperature": 0}
    with httpx.Client(base_url=base, timeout=120) as client:
        with client.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            time.sleep(BODY_TIMEOUT + 0.5)  # the request was read long ago: only the response is going on
            rest = list(lines)
        assert "data: [DONE]" in rest
        time.sleep(HEADER_TIMEOUT + 0.5)  # idle between requests: uvicorn's keep-alive, not the head deadline
        assert client.get("/health").status_code == 200
