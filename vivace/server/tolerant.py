"""Tolerant request bodies, as vLLM's server is: a field the server does not know is ignored, not refused.

Each ignored name (dotted for nested ones, `stream_options.foo`, `messages.foo`) is logged once per
server and listed in the `x-vivace-ignored-fields` response header, so a client can see what had no
effect. Fields the server knows but cannot honour are still 400s naming them (protocol.py).
"""

from __future__ import annotations

import json
import logging

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

IGNORED_FIELDS_HEADER = "x-vivace-ignored-fields"
MAX_HEADER_NAMES = 32  # a body may carry thousands of junk keys; the header names the first ones
MAX_LOGGED_NAMES = 1024  # distinct names remembered for log-once; past it, one last line says so


class TolerantModel(BaseModel):
    """A request body (or part of one) that keeps unknown fields aside instead of rejecting them."""

    model_config = ConfigDict(extra="allow")


def ignored_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """The unknown field names of `model` and the models inside it, dotted, in first-seen order."""
    names = [prefix + name for name in model.model_extra or {}]
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                names.extend(ignored_fields(item, f"{prefix}{name}."))
    return list(dict.fromkeys(names))


def record_ignored(request: Request, body: BaseModel) -> None:
    """Note the body's ignored fields on the request, for IgnoredFieldsHeader to report."""
    names = ignored_fields(body)
    if names:
        request.state.ignored_fields = names


def _shown_name(name: str) -> str:
    """A name as the header lists it: JSON-escaped (a header value must be printable ASCII), and quoted
    too when bare it would be empty, start or end with a space (illegal at a header's ends) or hold a comma."""
    escaped = json.dumps(name)[1:-1]
    if not escaped or escaped != escaped.strip() or "," in escaped:
        return f'"{escaped}"'
    return escaped


def _header_value(names: list[str]) -> bytes:
    shown = [_shown_name(name) for name in names[:MAX_HEADER_NAMES]]
    if len(names) > MAX_HEADER_NAMES:
        shown.append(f"... ({len(names) - MAX_HEADER_NAMES} more)")
    return ", ".join(shown).encode("ascii")


class IgnoredFieldsHeader:
    """ASGI middleware: lists a request's ignored fields in a response header and logs each name once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})

        async def reporting_send(message: Message) -> None:
            names = scope["state"].get("ignored_fields")
            if message["type"] == "http.response.start" and names:
                self._log_once(scope["path"], names)
                header = (IGNORED_FIELDS_HEADER.encode(), _header_value(names))
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, reporting_send)

    def _log_once(self, path: str, names: list[str]) -> None:
        new = [name for name in names if name not in self.logged]
        if not new or len(self.logged) > MAX_LOGGED_NAMES:
            return
        self.logged.update(new)
        log.warning("%s: ignored unknown request field(s) %s", path, ", ".join(map(repr, new[:MAX_HEADER_NAMES])))
        if len(self.logged) > MAX_LOGGED_NAMES:
            log.warning("more than %d distinct unknown fields seen; no longer logging new ones", MAX_LOGGED_NAMES)
