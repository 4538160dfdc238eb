"""Running a response's prompts on the engine, and streaming them as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import SamplingParams
from vivace.engine.outputs import RequestOutput
from vivace.server.errors import as_api_error
from vivace.server.shapes import CHAT, LogprobFormatter, ResponseMeta, Usage, finish_reason
from vivace.server.tool_calls import ToolCallStream

Primed = tuple[RequestOutput, AsyncIterator[RequestOutput]]

DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    """One SSE event carrying a JSON object."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


async def start(
    engine: AsyncEngine,
    prompts: list[str | list[int]],
    params: SamplingParams,
    base_id: str,
    observe: Callable[[AsyncIterator[RequestOutput]], AsyncIterator[RequestOutput]] | None = None,
    lora: str | None = None,
    session: str | None = None,
) -> list[Primed]:
    """Submit every prompt (run with LoRA adapter `lora`, if given; of conversation `session`, if given) and
    wait for each one's first output; engine validation errors raise here.

    `observe` wraps each prompt's output stream (the server's metrics pass through it).
    """
    gens = [
        engine.generate(p, params, request_id=f"{base_id}-{i}", lora=lora, session=session)
        for i, p in enumerate(prompts)
    ]
    if observe is not None:
        gens = [observe(g) for g in gens]
    try:
        firsts = await asyncio.gather(*(anext(g) for g in gens), return_exceptions=True)
    except BaseException:  # cancelled (the client hung up): abort every prompt now, not at garbage collection
        with anyio.CancelScope(shield=True):
            for g in gens:
                await g.aclose()  # type: ignore[attr-defined]
        raise
    errors = [f for f in firsts if isinstance(f, BaseException)]
    if errors:
        for g in gens:
            await g.aclose()  # type: ignore[attr-defined]
        raise errors[0]
    return list(zip(firsts, gens, strict=True))  # type: ignore[arg-type]


async def merge(primed: list[Primed]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, output) from every prompt as they come; closing it aborts what is unfinished."""
    queue: asyncio.Queue[tuple[int, RequestOutput] | BaseException] = asyncio.Queue()

    async def pump(i: int, first: RequestOutput, gen: AsyncIterator[RequestOutput]) -> None:
        try:
            await queue.put((i, first))
            async with aclosing(gen):
                async for out in gen:
                    await queue.put((i, out))
        except Exception as e:  # handed to the consumer
            await queue.put(e)

    tasks = [asyncio.create_task(pump(i, first, gen)) for i, (first, gen) in enumerate(primed)]
    remaining = len(primed)
    try:
        while remaining:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item[1].finished:
                remaining -= 1
            yield item
    finally:
        # Shielded: a cancelled response (client gone) must still abort every request. A pump task
        # cancelled before it ran never entered its aclosing, so each generator is closed here too.
        with anyio.CancelScope(shield=True):
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _, gen in primed:
                await gen.aclose()  # type: ignore[attr-defined]


async def collect(primed: list[Primed]) -> list[RequestOutput]:
    """Each prompt's finished output, in prompt order."""
    finals: list[RequestOutput] = [first for first, _ in primed]
    async with aclosing(merge(primed)) as outputs:
        async for i, out in outputs:
            finals[i] = out
    return finals


async def sse_events(
    meta: ResponseMeta,
    primed: list[Primed],
    logprobs: LogprobFormatter,
    include_usage: bool,
    continuous_usage: bool = False,
) -> AsyncIterator[bytes]:
    """The chunks of a streamed response, then [DONE]; an error mid-stream is one last error event.

    `continuous_usage` puts the usage so far on every chunk (vLLM's `continuous_usage_stats`).
    """
    finals: list[RequestOutput] = [first for first, _ in primed]
    sent_logprobs: dict[int, int] = {}
    text_offset: dict[int, int] = {}
    tool_streams: dict[int, ToolCallStream] = {}  # per choice, when the response parses tool calls
    try:
        if meta.kind == CHAT:
            roles = [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(len(primed) * meta.n)
            ]
            chunk = {**meta.header(chunk=True), "choices": roles}
            if continuous_usage:
                chunk["usage"] = Usage.of(finals).as_dict()
            yield sse(chunk)
        async with aclosing(merge(primed)) as outputs:
            async for p, out in outputs:
                finals[p] = out
                if out.error:
                    raise RuntimeError(out.error)
                choices = []
                for c in out.outputs:
                    index = p * meta.n + c.index
                    new_logprobs = None
                    if c.logprobs is not None:
                        start_at = sent_logprobs.get(index, 0)
                        new_logprobs = c.logprobs[start_at:]
                        sent_logprobs[index] = len(c.logprobs)
                    if not c.delta and not new_logprobs and c.finish_reason is None:
                        continue
                    choice: dict[str, Any] = {"index": index}
                    reason = finish_reason(c)
                    if meta.tool_calls:
                        parser = tool_streams.setdefault(index, ToolCallStream())
                        deltas = parser.feed(c.delta) + (parser.finish() if reason else [])
                        if parser.calls and reason == "stop":
                            reason = "tool_calls"
                        for delta in deltas:  # one chunk each: content and calls never share a delta
                            yield sse({**meta.header(chunk=True), "choices": [_chunk_choice(index, delta)]})
                        if reason is None and not new_logprobs:
                            continue
                        choice["delta"] = {}
                    elif meta.kind == CHAT:
                        choice["delta"] = {"content": c.delta} if c.delta else {}
                    else:
                        choice["text"] = c.delta
                    offset = text_offset.get(index, 0)
                    choice["logprobs"] = logprobs.format(meta.kind, new_logprobs, offset) if new_logprobs else None
                    text_offset[index] = offset + sum(len(logprobs.token(t.token_id)) for t in new_logprobs or [])
                    choice["finish_reason"] = reason
                    choices.append(choice)
                if choices:
                    chunk = {**meta.header(chunk=True), "choices": choices}
                    if continuous_usage:
                        chunk["usage"] = Usage.of(finals).as_dict()
                    yield sse(chunk)
        if include_usage:
            yield sse({**meta.header(chunk=True), "choices": [], "usage": Usage.of(finals).as_dict()})
        yield DONE
    except Exception as e:  # headers are sent: the error travels as the last event
        yield sse(as_api_error(e).body())


def _chunk_choice(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


class SSEResponse(StreamingResponse):
    """A text/event-stream response that stops and closes its body as soon as the client goes away.

    Starlette only notices a disconnect when a write fails; a queued request may not write for a
    while, so this listens for http.disconnect itself and closes the body (aborting the request).
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        on_close: Callable[[], None] | None = None,
        also_close: Sequence[AsyncIterator[Any]] = (),
    ) -> None:
        """`also_close`: streams the body would close, closed here too in case the body never started
        (a client gone before the first write leaves an unstarted body, whose aclose does nothing)."""
        super().__init__(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._body = body
        self._on_close = on_close
        self._also_close = also_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()  # type: ignore[attr-defined]
                for stream in self._also_close:
                    await stream.aclose()  # type: ignore[attr-defined]
                if self._on_close is not None:
                    self._on_close()
