"""The load generator: a fixed concurrency or a request rate, by request count or duration.

Each request's timeline is recorded (send time, every chunk's arrival with its text and token count,
end, error). Failed requests are recorded with their error, never dropped. Warm-up requests run
before the measured ones and are not recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vivace.bench.records import Chunk, LevelResult, RequestRecord
from vivace.bench.tokens import count_tokens
from vivace.bench.workloads import WorkItem
from vivace.engine.tokenizer import Tokenizer
from vivace.providers.base import Provider, ProviderError

OnDone = Callable[[RequestRecord], None]


class LoadError(ValueError):
    """A load level is misconfigured."""


@dataclass
class Load:
    """One load level: `concurrency` requests in flight, or `rate` requests/s (inf: all at once)
    with an optional concurrency cap; stop after `num_requests` or once `duration` s have passed."""

    concurrency: int | None = None
    rate: float | None = None
    poisson: bool = False
    num_requests: int | None = None
    duration: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.concurrency is None and self.rate is None:
            raise LoadError("a load level needs a concurrency or a request rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise LoadError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise LoadError(f"request rate must be > 0 requests/s, got {self.rate}")
        if self.num_requests is not None and self.num_requests < 1:
            raise LoadError(f"number of requests must be >= 1, got {self.num_requests}")
        if self.duration is not None and not self.duration > 0:
            raise LoadError(f"duration must be > 0 s, got {self.duration}")

    @property
    def mode(self) -> str:
        """'rate' when a request rate is set, else 'concurrency'."""
        return "rate" if self.rate is not None else "concurrency"


class _Counter:
    """Token counts where the provider gives none: the tokenizer's, else one per chunk."""

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer

    def text(self, text: str) -> int:
        if self.tokenizer is None:
            return 1 if text else 0
        return count_tokens(self.tokenizer, text)

    def prompt(self, item: WorkItem) -> int | None:
        if item.input_tokens is not None:
            return item.input_tokens
        if self.tokenizer is None:
            return None
        if item.request.prompt is not None:
            return count_tokens(self.tokenizer, item.request.prompt)
        try:
            return len(self.tokenizer.encode_chat(item.request.messages or []))
        except Exception:  # a tokenizer without a chat template: count the contents
            return sum(count_tokens(self.tokenizer, str(m.get("content", ""))) for m in item.request.messages or [])


async def run_request(provider: Provider, item: WorkItem, index: int, send: float, counter: _Counter) -> RequestRecord:
    """Send one request and record its timeline; any failure is recorded on the record, not raised."""
    record = RequestRecord(index=index, send=send)
    start = time.perf_counter()
    try:
        async for delta in provider.stream(item.request):
            t = time.perf_counter() - start
            if delta.text or delta.tokens:
                tokens = delta.tokens if delta.tokens is not None else counter.text(delta.text)
                record.chunks.append(Chunk(t=t, text=delta.text, tokens=tokens))
            if delta.usage is not None:
                record.prompt_tokens = delta.usage.prompt_tokens
                record.output_tokens = delta.usage.completion_tokens
            if delta.finish_reason is not None:
                record.finish_reason = delta.finish_reason
    except ProviderError as e:
        record.error, record.status = str(e) or type(e).__name__, e.status
    except Exception as e:  # a benchmark reports every failure instead of stopping
        record.error = f"{type(e).__name__}: {e}"
    record.end = time.perf_counter() - start
    if record.prompt_tokens is None:
        record.prompt_tokens = counter.prompt(item)
    if record.ok and record.output_tokens is None:
        record.output_tokens = counter.text(record.text) if counter.tokenizer else sum(c.tokens for c in record.chunks)
    return record


def _send_gaps(load: Load) -> Iterator[float]:
    """Seconds to wait before each send in rate mode: constant 1/rate, or exponential (Poisson)."""
    rng = random.Random(load.seed)
    assert load.rate is not None
    while True:
        if math.isinf(load.rate):
            yield 0.0
        else:
            yield rng.expovariate(load.rate) if load.poisson else 1.0 / load.rate


async def run_level(
    provider: Provider,
    items: list[WorkItem],
    load: Load,
    tokenizer: Tokenizer | None = None,
    on_done: OnDone | None = None,
) -> LevelResult:
    """Run one load level over `items` (cycled when a duration asks for more) and record every request."""
    if not items:
        raise LoadError("the workload has no requests")
    counter = _Counter(tokenizer)
    limit = load.num_requests if load.num_requests is not None else (None if load.duration else len(items))
    indices = itertools.count() if limit is None else iter(range(limit))
    records: list[RequestRecord] = []
    t0 = time.perf_counter()

    def next_index() -> int | None:
        if load.duration is not None and time.perf_counter() - t0 >= load.duration:
            return None
        return next(indices, None)

    async def one(index: int) -> None:
        record = await run_request(provider, items[index % len(items)], index, time.perf_counter() - t0, counter)
        records.append(record)
        if on_done is not None:
            on_done(record)

    if load.mode == "concurrency":

        async def worker() -> None:
            while (index := next_index()) is not None:
                await one(index)

        await asyncio.gather(*(worker() for _ in range(load.concurrency or 1)))
    else:
        cap = asyncio.Semaphore(load.concurrency) if load.concurrency else None

        async def capped(index: int) -> None:
            if cap is None:
                await one(index)
                return
            async with cap:
                await one(index)

        tasks = []
        for gap in _send_gaps(load):
            if (index := next_index()) is None:
                break
            tasks.append(asyncio.create_task(capped(index)))
            if limit is not None and len(tasks) >= limit:
                break  # no wait after the last send: it would count in the wall time
            if gap:
                await asyncio.sleep(gap)
        await asyncio.gather(*tasks)
    duration = time.perf_counter() - t0
    records.sort(key=lambda r: r.index)
    return LevelResult(
        mode=load.mode,
        value=float(load.rate if load.rate is not None else load.concurrency or 1),
        duration=duration,
        records=records,
    )


async def warm_up(provider: Provider, items: list[WorkItem], count: int, concurrency: int = 1) -> None:
    """Send `count` requests that are not recorded (connections, caches, compilation warm up)."""
    if count > 0:
        await run_level(provider, items, Load(concurrency=max(1, min(concurrency, count)), num_requests=count))
