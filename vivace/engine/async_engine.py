"""AsyncEngine: the engine loop on its own thread, requests as async iterators of outputs."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from queue import Empty, SimpleQueue
from typing import TypeVar

from vivace.daemon_threads import start_daemon
from vivace.engine.config import EngineConfig, SamplingParams
from vivace.engine.engine import LLMEngine
from vivace.engine.lora.manager import LoadedLoRA
from vivace.engine.outputs import RequestOutput

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineDeadError(RuntimeError):
    """The engine loop has stopped; no request can be served."""


class EngineShutdownError(EngineDeadError):
    """The engine was stopped (or drained past its deadline) while this request was in flight."""


class AsyncEngine:
    """Thread-safe front of an LLMEngine for asyncio servers; abort on cancellation.

    Adds and aborts are commands on one queue that the engine thread runs, in order, before each
    step. A request is accepted the moment its add is queued, so an abort queued after it (on any
    cancellation, however early) always finds it; and all the commands that piled up during a step
    run together, instead of each waiting its turn for the engine lock.
    """

    def __init__(self, engine: LLMEngine, background: bool = True) -> None:
        """`background=False` leaves the loop to the caller: run `run_loop()` on the thread that should
        step the engine (`vivace serve` keeps it on the main thread, see serve.py)."""
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self._lock = threading.Lock()  # guards every call into the engine
        self._wake = threading.Event()
        self._commands: SimpleQueue[Callable[[], None]] = SimpleQueue()  # run by the engine thread
        # Each request's outputs, or the exception that ends it, go to its caller's loop and queue.
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()
        self._stopped = False
        self._refusal: str | None = None  # set by refuse_new: why new requests are turned away
        self._thread: threading.Thread | None = None
        # What stats() returns: replaced whole (never mutated) by the engine thread after each step, so
        # readers (the /metrics scrape on the event loop) never wait for the engine lock.
        self._stats: dict = engine.stats()
        if background:  # stopped after its current step at interpreter exit too (daemon_threads)
            self._thread = start_daemon(self.run_loop, "vivace-engine", self._request_stop)

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncEngine:
        """Build the engine on the thread that will step it; raises what building raised.

        One thread does all the torch work: once two threads have run OpenMP parallel regions, more
        threads belong to OpenMP teams than there are cores, libgomp's workers stop spinning between
        regions, and every CPU kernel pays a wake-up (a model loaded on the main thread and stepped on
        this one ran 44% fewer steps per second).
        """
        built: SimpleQueue[AsyncEngine | BaseException] = SimpleQueue()
        engines: list[AsyncEngine] = []  # the engine once built, for stop_built

        def stop_built() -> None:
            for engine in engines:
                engine._request_stop()

        def build_and_run() -> None:
            try:
                async_engine = cls(LLMEngine(config), background=False)
            except BaseException as exc:  # handed to the caller, who raises it
                built.put(exc)
                return
            async_engine._thread = threading.current_thread()
            engines.append(async_engine)
            built.put(async_engine)
            async_engine.run_loop()

        start_daemon(build_and_run, "vivace-engine", stop_built)
        result = built.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def run_loop(self) -> None:
        """Step the engine while it has work, until `shutdown()`; blocks the calling thread."""
        while not self._stopped:
            with self._lock:
                self._run_commands()
                busy = self.engine.has_unfinished_requests()
                outputs = self.engine.step() if busy else []
                self._stats = self.engine.stats()
            if outputs:
                self._deliver(outputs)
            if not busy:
                self._wake.wait(timeout=0.5)
                self._wake.clear()

    def _run_commands(self) -> None:
        """Run every queued add and abort, in the order they were queued (the caller holds the lock)."""
        while True:
            try:
                command = self._commands.get_nowait()
            except Empty:
                return
            command()

    def _submit(self, command: Callable[[], None]) -> None:
        self._commands.put(command)
        self._wake.set()

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        """Hand a step's outputs to their callers: one wake-up per event loop, not one per request.

        Each wake-up costs the engine thread a GIL hand-off in the middle of its next forward pass;
        with 32 streams that was a third of the serving throughput.
        """
        batches: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, RequestOutput]]] = {}
        for out in outputs:
            target = self._queues.get(out.request_id)
            if target is None:
                continue
            loop, queue = target
            if out.finished:
                self._queues.pop(out.request_id, None)
            batches.setdefault(loop, []).append((queue, out))
        for loop, batch in batches.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # the caller's loop is gone
                pass

    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        score_from: int | None = None,
        pool: bool = False,
        lora: str | None = None,
        session: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request as they are produced (run with LoRA adapter `lora`, if given; `session`
        pins its conversation's blocks after it); leaving the iteration early aborts it.

        Validation errors (bad parameters, prompt too long, unknown adapter) raise here, before anything is queued.
        """
        if self._stopped:
            raise EngineDeadError("the engine has been shut down")
        if self._refusal is not None:
            raise EngineShutdownError(self._refusal)
        request_id = request_id or f"req-{next(self._ids)}"
        queue: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        added: asyncio.Future[None] = loop.create_future()

        def add() -> None:
            try:
                self.engine.add_request(
                    request_id, prompt, params, score_from=score_from, pool=pool, lora=lora, session=session
                )
            except Exception as exc:  # raised to the caller below
                _call_soon(loop, _settle, added, exc)
                return
            self._queues[request_id] = (loop, queue)
            _call_soon(loop, _settle, added, None)

        self._submit(add)
        finished = False
        try:
            try:
                await added
            except Exception:
                finished = True  # validation failed: nothing was queued
                raise
            while not finished:
                out = await queue.get()
                if isinstance(out, Exception):
                    finished = True  # the engine already dropped the request
                    raise out
                finished = out.finished
                yield out
        finally:
            if not finished:
                # Queued behind the add, so it finds the request; nothing to await, so a second
                # cancellation cannot skip it.
                self._submit(lambda: self._abort_now(request_id))

    async def add_lora(self, name: str, path: str) -> LoadedLoRA:
        """Load a LoRA adapter between two steps (its slot's weights change in place); LoRAError if it cannot be."""
        return await self._between_steps(lambda: self.engine.add_lora(name, path))

    async def remove_lora(self, name: str) -> LoadedLoRA:
        """Unload a LoRA adapter between two steps; LoRAError while requests still use it."""
        return await self._between_steps(lambda: self.engine.remove_lora(name))

    async def _between_steps(self, work: Callable[[], T]) -> T:
        """Run `work` on the engine thread between steps (or here, under the lock, once it has stopped)."""
        if self._stopped:
            with self._lock:
                return work()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()

        def command() -> None:
            try:
                result = work()
            except Exception as exc:
                _call_soon(loop, _settle, done, exc)
                return
            _call_soon(loop, _settle, done, None, result)

        self._submit(command)
        return await done

    async def abort(self, request_id: str) -> None:
        """Stop a request and free its KV blocks; returns once the engine thread has done it."""
        if self._stopped:  # no engine thread runs commands any more
            with self._lock:
                self._abort_now(request_id)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def abort() -> None:
            self._abort_now(request_id)
            _call_soon(loop, _settle, done, None)

        self._submit(abort)
        await done

    def _abort_now(self, request_id: str) -> None:
        self._queues.pop(request_id, None)
        self.engine.abort(request_id)

    def refuse_new(self, reason: str) -> None:
        """From now on `generate` raises EngineShutdownError(reason); requests already added go on."""
        self._refusal = reason

    async def abort_all(self, reason: str) -> int:
        """Abort every request; each caller's iteration raises EngineShutdownError(reason). Returns how many."""
        return await asyncio.to_thread(self._abort_all, reason)

    def _abort_all(self, reason: str) -> int:
        with self._lock:
            self._run_commands()  # adds queued before now are aborted too (the loop may have stopped)
            request_ids = self.engine.request_ids()
            for request_id in request_ids:
                self.engine.abort(request_id)
            targets = [self._queues.pop(request_id, None) for request_id in request_ids]
            self._stats = self.engine.stats()
        for target in targets:
            if target is not None:
                loop, queue = target
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, EngineShutdownError(reason))
                except RuntimeError:  # the caller's loop is gone
                    pass
        return len(request_ids)

    @property
    def stopped(self) -> bool:
        """Whether the loop was shut down (a replica whose engine stopped is unhealthy)."""
        return self._stopped

    def stats(self) -> dict:
        """The engine's counters as of its last step (or last idle wake-up); never takes the engine lock."""
        return self._stats

    def shutdown(self) -> None:
        """Stop the loop thread (in-flight requests are aborted)."""
        self._request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._abort_all("the engine was shut down")
        if self._thread is None or not self._thread.is_alive():
            self.engine.close()

    def _request_stop(self) -> None:
        """Make `run_loop` return after its current step."""
        self._stopped = True
        self._wake.set()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's loop is gone
        pass


def _settle(future: asyncio.Future, error: Exception | None, result: object = None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _put_all(batch: list[tuple[asyncio.Queue, RequestOutput]]) -> None:
    for queue, out in batch:
        queue.put_nowait(out)
