"""The server's listening socket, bound before the model loads so a taken port fails in a second, not a minute."""

from __future__ import annotations

import errno
import socket


class ListenError(OSError):
    """The server cannot listen on the host and port it was given; the message says what to do."""


def display_url(host: str, port: int) -> str:
    """http://HOST:PORT, with an IPv6 host in brackets."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), handed to uvicorn later; ListenError when that cannot be done.

    Binding (not just probing) keeps the port ours between the check and the moment uvicorn starts
    listening on it, after the model has loaded.
    """
    where = display_url(host, port).removeprefix("http://")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {where}: unknown host {host!r} ({e.strerror}); check --host") from None
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restarted server may bind while the old one's connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is already in use; stop the server listening there or choose another --port"
            ) from None
        raise ListenError(f"cannot listen on {where}: {e.strerror or e}; check --host and --port") from None
    return sock
