"""Server-Sent Events as OpenAI-compatible servers send them: `data: {json}` lines, `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass
class SSEEvent:
    """One event: its `event:` name (None when unnamed) and its data, parsed as JSON, or None for [DONE]."""

    event: str | None
    data: dict[str, Any] | None

    @property
    def done(self) -> bool:
        return self.data is None


class SSEParseError(ValueError):
    """A data field that is neither JSON nor [DONE]."""


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Events from a stream of text lines; multi-line data fields are joined per the SSE spec."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        line = line.rstrip("\r")
        if not line:  # blank line: dispatch
            if data:
                yield _event(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):  # comment / keep-alive
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:  # a stream that ends without the final blank line
        yield _event(event, "\n".join(data))


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
