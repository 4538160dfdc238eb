"""Clients that hang up while their requests are being added leave nothing running (real sockets)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server.conftest import MODEL

pytestmark = pytest.mark.slow

STREAMS = 200
HANG_UP_WITHIN_S = 1.0  # each client hangs up at a random moment in this window: most while being added


def _request(host: str) -> bytes:
    # No max_tokens: an orphaned request would generate up to the context length.
    body = json.dumps({"model": MODEL, "prompt": "Tell me a very long story about a dragon.", "stream": True})
    head = f"POST /v1/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n{body}").encode()


async def _send_then_hang_up(host: str, port: int, raw: bytes, delay: float) -> None:
    _, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    await asyncio.sleep(delay)
    writer.transport.abort()  # a reset, as a killed client leaves it


def _idle(stats: dict) -> bool:
    return stats["num_running"] == 0 and stats["num_waiting"] == 0 and stats["blocks_in_use"] == 0


async def test_streams_cancelled_while_being_added_leave_no_request_running(server):
    url = urlsplit(server.base_url)
    raw = _request(url.netloc)
    rng = random.Random(0)
    await asyncio.gather(
        *(_send_then_hang_up(url.hostname, url.port, raw, rng.uniform(0, HANG_UP_WITHIN_S)) for _ in range(STREAMS))
    )
    hung_up = time.monotonic()
    stats = await asyncio.to_thread(server.engine.stats)
    while not _idle(stats) and time.monotonic() - hung_up < 20:
        await asyncio.sleep(0.1)
        stats = await asyncio.to_thread(server.engine.stats)
    took = time.monotonic() - hung_up
    assert _idle(stats), stats  # before the fix, orphans generated to the context length
    assert took < 3, f"requests still running {took:.1f} s after their clients hung up"
    probe = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.post(server.base_url + "/v1/completions", json=probe)).status_code == 200
