"""One log line per finished engine request (tokens, time to first token, decode rate, finish reason),
and the quieting of uvicorn's access lines for the web UI's files and probes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from vivace.engine.outputs import RequestOutput

log = logging.getLogger("vivace.requests")


@dataclass
class RequestTiming:
    """What one engine request did, as its log line reports it."""

    request_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # admission to the first generated token, seconds
    decode_seconds: float = 0.0  # first token to last token
    total_seconds: float = 0.0
    finish: str = "abort"

    def line(self) -> str:
        """`cmpl-1f2e-0: prompt 12 tok, completion 34 tok, TTFT 0.120 s, 41.3 tok/s, 0.92 s, finish stop`."""
        ttft = "-" if self.ttft is None else f"{self.ttft:.3f} s"
        # Decode rate over the tokens after the first, so one slow prefill does not hide in it.
        rate = (
            f"{(self.completion_tokens - 1) / self.decode_seconds:.1f} tok/s"
            if self.completion_tokens > 1 and self.decode_seconds > 0
            else "- tok/s"
        )
        return (
            f"{self.request_id}: prompt {self.prompt_tokens} tok, completion {self.completion_tokens} tok, "
            f"TTFT {ttft}, {rate}, {self.total_seconds:.2f} s, finish {self.finish}"
        )


async def log_request(outputs: AsyncIterator[RequestOutput], admitted: float) -> AsyncIterator[RequestOutput]:
    """Pass one engine request's outputs through; when it ends (or is closed early) log its line."""
    timing: RequestTiming | None = None
    first_token_at = last_token_at = None
    async with aclosing(outputs):  # type: ignore[type-var]
        try:
            async for out in outputs:
                now = time.perf_counter()
                if timing is None:
                    timing = RequestTiming(out.request_id, prompt_tokens=len(out.prompt_token_ids))
                tokens = sum(len(c.token_ids) for c in out.outputs)
                if tokens > timing.completion_tokens:
                    first_token_at = first_token_at or now
                    last_token_at = now
                    timing.completion_tokens = tokens
                if out.finished:
                    reasons = dict.fromkeys(c.finish_reason or "stop" for c in out.outputs)
                    timing.finish = "error" if out.error else ",".join(reasons)
                yield out
        finally:
            if timing is not None:
                end = time.perf_counter()
                timing.total_seconds = end - admitted
                if first_token_at is not None and last_token_at is not None:
                    timing.ttft = first_token_at - admitted
                    timing.decode_seconds = last_token_at - first_token_at
                log.info(timing.line())


class QuietAccessLog(logging.Filter):
    """Drop uvicorn's access lines for successful requests outside /v1 (the web UI's files, /health,
    /metrics): they drown the per-request lines. Failures and every /v1 request are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) >= 5):
            return True
        path, status = str(args[2]), args[4]
        return path.startswith("/v1/") or not (isinstance(status, int) and status < 400)
