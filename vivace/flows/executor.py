"""Running a flow: every step starts as soon as its inputs are ready; their events merge into one stream.

Each step is an asyncio task waiting on its dependencies' outcomes. A failed step fails its
dependents (reason "dependency") while independent steps go on. Leaving the event iteration early
(a client gone) cancels every running step; closing a step's provider stream aborts its engine
request, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
import jinja2

from vivace.flows.events import FlowEvent, FlowFinished, StepDelta, StepFailed, StepFinished, StepStarted
from vivace.flows.graph import critical_path
from vivace.flows.model import ENV, Flow, Step
from vivace.flows.parsers import ParseError, as_items, parse
from vivace.flows.pool import ProviderPool
from vivace.providers.base import GenerationRequest

MAX_FOR_EACH_ITEMS = 128  # one step's fan-out: each item is a model call (an engine sequence) in flight at once


class StepError(RuntimeError):
    """Why one step (or one for_each item) failed; `reason` as in StepFailed."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FlowResult:
    """A whole run, collected: each step's last event, the flow_finished event, every event in order."""

    steps: dict[str, StepFinished | StepFailed]
    finished: FlowFinished
    events: list[FlowEvent] = field(default_factory=list)

    def value(self, step: str) -> Any:
        """A finished step's parsed value; a failed one raises StepError with its error."""
        event = self.steps[step]
        if isinstance(event, StepFailed):
            raise StepError(event.error, event.reason)
        return event.value


class _Run:
    """The state of one run: step outcomes, values, timings and the event queue."""

    def __init__(self, flow: Flow, inputs: dict[str, Any], pool: ProviderPool, max_concurrent: int | None) -> None:
        self.flow = flow
        self.inputs = flow.resolve_inputs(inputs)
        self.pool = pool
        self.limit = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self.queue: asyncio.Queue[FlowEvent | None] = asyncio.Queue()
        self.outcome: dict[str, asyncio.Future[bool]] = {}
        self.values: dict[str, Any] = {}
        self.spans: dict[str, tuple[float, float]] = {}
        self.call_time = 0.0
        self.tokens = 0
        self.t0 = 0.0
        self.templates = {
            name: (
                ENV.from_string(s.prompt),
                ENV.from_string(s.system) if s.system is not None else None,
                ENV.compile_expression(s.for_each) if s.for_each is not None else None,
                ENV.from_string(s.schema) if isinstance(s.schema, str) else None,
            )
            for name, s in flow.steps.items()
        }

    def now(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, event: FlowEvent) -> None:
        self.queue.put_nowait(event)

    async def events(self) -> AsyncIterator[FlowEvent]:
        loop = asyncio.get_running_loop()
        self.t0 = time.monotonic()
        self.outcome = {name: loop.create_future() for name in self.flow.steps}
        tasks = [asyncio.create_task(self._step(name), name=f"flow-step-{name}") for name in self.flow.order()]
        remaining = len(tasks)
        try:
            while remaining:
                event = await self.queue.get()
                if event is None:
                    remaining -= 1
                    continue
                yield event
            yield self._finished()
        finally:
            # Shielded: a cancelled consumer must still cancel (and so abort) every running step.
            with anyio.CancelScope(shield=True):
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self) -> FlowFinished:
        failed = [n for n, f in self.outcome.items() if not f.result()]
        durations = {n: end - start for n, (start, end) in self.spans.items()}
        cp_time, cp = critical_path(durations, {n: s.depends_on for n, s in self.flow.steps.items()})
        return FlowFinished(self.flow.name, not failed, self.now(), cp_time, self.call_time, cp, failed, self.tokens)

    async def _step(self, name: str) -> None:
        step = self.flow.steps[name]
        ok = False
        try:
            for dep in sorted(step.depends_on):
                if not await self.outcome[dep]:
                    raise StepError(f"step {name!r} did not run: it needs step {dep!r}, which failed", "dependency")
            context = {**self.inputs, **{d: self.values[d] for d in step.depends_on}}
            if step.for_each is None:
                self.emit(StepStarted(name, at=self.now()))
                finished = await self._call(step, context, None)
                self.spans[name] = (finished.started_at, finished.finished_at)
            else:
                finished = await self._fan_out(step, context)
            self.values[name] = finished.value
            self.emit(finished)
            ok = True
        except StepError as e:
            self.emit(StepFailed(name, str(e), e.reason, at=self.now()))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or an unexpected provider error: fail this step, not the run
            self.emit(StepFailed(name, f"step {name!r} failed: {type(e).__name__}: {e}", at=self.now()))
        finally:
            if not self.outcome[name].done():
                self.outcome[name].set_result(ok)
            self.queue.put_nowait(None)

    async def _fan_out(self, step: Step, context: dict[str, Any]) -> StepFinished:
        """One call per item of `for_each`; the step fails if any item does, after all have ended."""
        try:
            items = as_items(self.templates[step.name][2](**context))
        except Exception as e:
            raise StepError(f"step {step.name!r}: for_each {step.for_each!r} failed: {e}") from None
        if len(items) > MAX_FOR_EACH_ITEMS:
            raise StepError(
                f"step {step.name!r}: for_each gave {len(items)} items; at most {MAX_FOR_EACH_ITEMS} model calls "
                "fan out from one step"
            )
        self.emit(StepStarted(step.name, at=self.now(), items=len(items)))
        start = self.now()
        results = await asyncio.gather(
            *(self._item(step, {**context, "item": item, "index": i}, i, item) for i, item in enumerate(items)),
            return_exceptions=True,
        )
        end = self.now()
        self.spans[step.name] = (start, end)
        errors = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        if errors:
            i, first = errors[0]
            if not isinstance(first, StepError):
                raise first
            raise StepError(
                f"step {step.name!r}: {len(errors)} of {len(items)} items failed; item {i}: {first}", first.reason
            )
        done: list[StepFinished] = results  # type: ignore[assignment]
        return StepFinished(
            step.name,
            "\n".join(r.text for r in done),
            [r.value for r in done],
            tokens=sum(r.tokens for r in done),
            prompt_tokens=sum(r.prompt_tokens for r in done),
            started_at=start,
            finished_at=end,
            parse_error="; ".join(f"item {r.index}: {r.parse_error}" for r in done if r.parse_error) or None,
        )

    async def _item(self, step: Step, context: dict[str, Any], index: int, item: Any) -> StepFinished:
        label = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)
        self.emit(StepStarted(step.name, index, at=self.now(), item=label))
        try:
            finished = await self._call(step, context, index)
        except StepError as e:
            self.emit(StepFailed(step.name, str(e), e.reason, index, at=self.now()))
            raise
        self.emit(finished)
        return finished

    def _request(self, step: Step, context: dict[str, Any]) -> GenerationRequest:
        prompt_t, system_t, _, _ = self.templates[step.name]
        try:
            prompt = prompt_t.render(context)
            system = system_t.render(context) if system_t is not None else None
        except jinja2.TemplateError as e:
            raise StepError(f"step {step.name!r}: its template failed to render: {e}") from None
        sampling = {
            "max_tokens": step.max_tokens,
            "temperature": step.temperature,
            "top_p": step.top_p,
            "top_k": step.top_k,
            "seed": step.seed,
            "stop": step.stop,
        }
        if not step.chat:
            return GenerationRequest(prompt=(system + "\n\n" if system else "") + prompt, **sampling)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return GenerationRequest(messages=messages, **sampling)

    def _schema(self, step: Step, context: dict[str, Any]) -> dict[str, Any]:
        """The step's JSON schema: as written, or its template rendered and decoded."""
        template = self.templates[step.name][3]
        if template is None:
            return step.schema  # type: ignore[return-value]
        try:
            schema = json.loads(template.render(context))
        except (jinja2.TemplateError, ValueError) as e:
            raise StepError(f"step {step.name!r}: its schema template did not give JSON: {e}") from None
        if not isinstance(schema, dict):
            raise StepError(f"step {step.name!r}: its schema must be a JSON object, got {schema!r}")
        return schema

    async def _call(self, step: Step, context: dict[str, Any], index: int | None) -> StepFinished:
        """One model call: render, stream (emitting deltas), parse."""
        request = self._request(step, context)
        spec = step.provider or self.flow.provider
        try:
            provider = await self.pool.get(spec)
        except Exception as e:
            raise StepError(f"step {step.name!r}: provider {spec!r} is not available: {e}") from None
        if step.schema is not None and provider.structured_outputs:
            schema = {"name": step.name, "schema": self._schema(step, context), "strict": True}
            request.extra["response_format"] = {"type": "json_schema", "json_schema": schema}
        parts: list[str] = []
        tokens = prompt_tokens = 0
        finish_reason = None
        async with self.limit or nullcontext():
            started = self.now()
            try:
                async with asyncio.timeout(step.timeout):
                    async with aclosing(provider.stream(request)) as deltas:
                        async for delta in deltas:
                            if delta.text:
                                parts.append(delta.text)
                                self.emit(StepDelta(step.name, delta.text, index))
                            tokens += delta.tokens or 0
                            if delta.usage is not None:
                                tokens, prompt_tokens = delta.usage.completion_tokens, delta.usage.prompt_tokens
                            finish_reason = delta.finish_reason or finish_reason
            except TimeoutError:
                raise StepError(f"step {step.name!r} timed out after {step.timeout:g}s", "timeout") from None
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise StepError(f"step {step.name!r}: provider {spec!r} failed: {e}") from None
            finally:
                self.call_time += self.now() - started
        finished = self.now()
        self.tokens += tokens
        text = "".join(parts)
        parse_error = None
        try:
            value = parse(step.parser, text)
        except ParseError as e:
            if step.default is None:
                raise StepError(
                    f"step {step.name!r}: {e} (parser {step.parser!r}; give the step a default "
                    f"to carry on with it instead)"
                ) from None
            value, parse_error = step.default, str(e)
        return StepFinished(
            step.name, text, value, index, tokens, prompt_tokens, started, finished, finish_reason, parse_error
        )


async def run_flow(
    flow: Flow, inputs: dict[str, Any], providers: ProviderPool | None = None, *, max_concurrent: int | None = None
) -> AsyncIterator[FlowEvent]:
    """The events of one run of `flow`; leave the iteration (or cancel it) to cancel the run.

    `max_concurrent` caps model calls in flight (1 runs the steps one after another, the baseline the
    benchmark compares against). Missing or unknown inputs raise FlowError before anything runs.
    """
    run = _Run(flow, inputs, providers or ProviderPool(), max_concurrent)
    async with aclosing(run.events()) as events:
        async for event in events:
            yield event


async def collect(
    flow: Flow, inputs: dict[str, Any], providers: ProviderPool | None = None, *, max_concurrent: int | None = None
) -> FlowResult:
    """Run `flow` to the end and return its FlowResult."""
    steps: dict[str, StepFinished | StepFailed] = {}
    events: list[FlowEvent] = []
    async with aclosing(run_flow(flow, inputs, providers, max_concurrent=max_concurrent)) as stream:
        async for event in stream:
            events.append(event)
            if isinstance(event, (StepFinished, StepFailed)) and event.index is None:
                steps[event.step] = event
            if isinstance(event, FlowFinished):
                return FlowResult(steps, event, events)
    raise RuntimeError("flow ended without a flow_finished event")
