"""Server-Sent Events as OpenAI-compatible servers send them: `data: {json}` events, `data: [DONE]`.

Lines are split by httpx-sse (only CR, LF and CRLF end a line, as the SSE spec says), so text with
U+2028, U+2029 or U+0085 inside a JSON string, which servers send unescaped, stays one line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError


@dataclass
class SSEEvent:
    """One event: its `event:` name (None when unnamed) and its data, parsed as JSON, or None for [DONE]."""

    event: str | None
    data: dict[str, Any] | None

    @property
    def done(self) -> bool:
        return self.data is None


class SSEParseError(ValueError):
    """A stream that is not text/event-stream, or a data field that is neither JSON nor [DONE]."""


async def iter_sse(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """The events of a streamed response; multi-line data fields are joined per the SSE spec."""
    try:
        async with aclosing(EventSource(response).aiter_sse()) as source:
            async for sse in source:
                if sse.data:  # an event with no data field is not dispatched
                    yield _event(None if sse.event == "message" else sse.event, sse.data)
    except SSEError as e:
        raise SSEParseError(str(e)) from None


def _event(event: str | None, payload: str) -> SSEEvent:
    if payload.strip() == "[DONE]":
        return SSEEvent(event, None)
    try:
        parsed = json.loads(payload)
    except json.JSONDecodeError:
        raise SSEParseError(f"stream sent a data field that is not JSON: {payload[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise SSEParseError(f"stream sent a data field that is not a JSON object: {payload[:200]!r}")
    return SSEEvent(event, parsed)
