"""Who may call the API: the key on every route but the public ones, and browser guards when there is no key.

With an API key, every route needs `Authorization: Bearer <key>` except `/health` and the web UI's
pages and static files (the page asks the user for the key). Without one (the default, for a server
on the user's own machine) any web page the user visits could otherwise drive the API, so:

- the Host header must be localhost or an IP address: a DNS-rebinding page reaches the server under
  its own host name, and is refused;
- a request from a browser page of another origin (its `Origin` header) is refused unless that
  origin is listed in `--allowed-origins`;
- a body must be declared `application/json`: the content types a page may send cross-site without
  asking first (text/plain, forms) are refused.

`--allowed-origins` also turns on CORS (Starlette's middleware) for those origins, key or no key.
The access log is written without query strings, which may carry secrets.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from vivace.server.errors import APIError

PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/flows/", "/flows-static/")  # the UI's pages and assets; /v1/flows is the API
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_public(path: str) -> bool:
    """Whether `path` is served without the API key."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def is_local_host(host: str) -> bool:
    """Whether a Host header names localhost or an IP address (with or without a port)."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class AccessGuard:
    """ASGI middleware applying the rules in this module's docstring."""

    def __init__(self, app: ASGIApp, api_key: str | None, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.api_key = api_key
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                return await refusal.response()(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> APIError | None:
        """The error this request is refused with, or None if it may go on."""
        headers = Headers(scope=scope)
        if self.api_key is not None:
            if is_public(scope["path"]) or self._has_key(headers):
                return None
            return APIError(
                401, "missing or invalid API key; send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )
        host = headers.get("host", "")
        if not is_local_host(host):
            return APIError(
                403,
                f"host {host!r} is refused while the server has no API key (a guard against DNS rebinding): "
                "use localhost or an IP address, or set an API key (VIVACE_API_KEY)",
                code="host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host and origin.rstrip("/") not in self.allowed_origins:
            return APIError(
                403,
                f"requests from web pages of origin {origin!r} are refused; list it in --allowed-origins",
                code="origin_not_allowed",
            )
        if scope["method"] in _BODY_METHODS and not _is_json(headers.get("content-type", "")):
            return APIError(
                415, "the body must be sent as Content-Type: application/json", "content-type", "unsupported_media_type"
            )
        return None

    def _has_key(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        assert self.api_key is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())


class DropQueryStrings(logging.Filter):
    """Strip the query string from uvicorn's access-log lines (`"GET /path?key=... HTTP/1.1"`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True
