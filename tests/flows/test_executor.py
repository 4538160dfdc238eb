"""The executor on the packaged model: event order, fan-out, failure propagation, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing

import pytest

from tests.flows.conftest import wait_for_free_blocks
from vivace.flows.events import FlowFinished, StepDelta, StepFailed, StepFinished, StepStarted
from vivace.flows.executor import StepError, collect, run_flow
from vivace.flows.loader import FlowBuilder
from vivace.flows.model import FlowError

pytestmark = pytest.mark.slow


def _key(event):
    return (event.step, event.index)


def check_event_order(events):
    """Every (step, item)'s deltas come after its start and before its finish; exactly one end each."""
    started, ended = set(), set()
    for event in events[:-1]:
        key = _key(event)
        assert key not in ended, f"{event.kind} for {key} after it ended"
        if isinstance(event, StepStarted):
            assert key not in started
            started.add(key)
        else:
            assert key in started or (isinstance(event, StepFailed) and event.reason == "dependency"), event
        if isinstance(event, (StepFinished, StepFailed)):
            ended.add(key)
    assert isinstance(events[-1], FlowFinished)
    assert started <= ended


async def test_fanout_flow_events_and_values(fanout, pool, engine):
    result = await collect(fanout, {}, pool)
    events = result.events
    check_event_order(events)
    assert result.finished.ok and result.finished.failed == []
    position = {(_key(e), e.kind): i for i, e in enumerate(events[:-1])}
    for name, step in fanout.steps.items():
        for dep in step.depends_on:  # a dependent starts only after each of its inputs finished
            assert position[((dep, None), "step_finished")] < position[((name, None), "step_started")]
        finished = result.steps[name]
        deltas = "".join(e.text for e in events if isinstance(e, StepDelta) and e.step == name)
        if step.for_each is None:
            assert finished.text == deltas and finished.value == finished.text
            assert 0 < finished.tokens <= 6
    each = result.steps["each"]
    assert isinstance(each, StepFinished) and len(each.value) == 3
    items = [e for e in events if isinstance(e, StepFinished) and e.step == "each" and e.index is not None]
    assert sorted(e.index for e in items) == [0, 1, 2]
    assert [e for e in events if isinstance(e, StepStarted) and e.step == "each" and e.index is None][0].items == 3
    started = {
        e.index: e.item for e in events if isinstance(e, StepStarted) and e.step == "each" and e.index is not None
    }
    assert started == {0: "apples", 1: "pears", 2: "plums"}  # each item's event names its item
    # b, c and the three items ran at the same time: their spans overlap
    spans = [(result.steps[n].started_at, result.steps[n].finished_at) for n in ("b", "c")] + [
        (e.started_at, e.finished_at) for e in items
    ]
    assert max(s for s, _ in spans) < min(f for _, f in spans)
    f = result.finished
    assert f.critical_path[0] == "a" and f.critical_path[-1] in ("d", "each")
    assert f.critical_path_time <= f.wall_time + 1e-6
    assert f.wall_time < f.step_time_sum
    assert f.tokens == sum(result.steps[n].tokens for n in fanout.steps)
    assert wait_for_free_blocks(engine) == 0


async def test_fixed_seeds_give_the_same_texts(fanout, pool):
    first = await collect(fanout, {"topic": "rain"}, pool)
    again = await collect(fanout, {"topic": "rain"}, pool, max_concurrent=1)  # one after another
    assert {n: first.steps[n].text for n in fanout.steps} == {n: again.steps[n].text for n in fanout.steps}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_failed_steps_fail_their_dependents_and_others_finish(pool, engine):
    dead = f"openai-compatible:m@http://127.0.0.1:{_closed_port()}/v1"
    flow = (
        FlowBuilder("failing", max_tokens=4, seed=1)
        .input("word", default="x")
        .step("remote", "{{ word }}", provider=dead)
        .step("after_remote", "{{ remote }}")
        .step("broken", "{{ word[5] }}")  # renders to an undefined value: a template error
        .step("after_broken", "{{ broken }} and {{ fine }}")
        .step("fine", "Say {{ word }}.")
        .step("after_fine", "Then {{ fine }}.")
        .build()
    )
    result = await collect(flow, {}, pool)
    check_event_order(result.events)
    assert result.finished.ok is False
    assert sorted(result.finished.failed) == ["after_broken", "after_remote", "broken", "remote"]
    remote, broken = result.steps["remote"], result.steps["broken"]
    assert isinstance(remote, StepFailed) and remote.reason == "error" and "failed" in remote.error
    assert isinstance(broken, StepFailed) and "template failed to render" in broken.error
    after = result.steps["after_broken"]
    assert isinstance(after, StepFailed) and after.reason == "dependency"
    assert after.error == "step 'after_broken' did not run: it needs step 'broken', which failed"
    assert isinstance(result.steps["after_fine"], StepFinished)
    with pytest.raises(StepError, match="needs step 'remote'"):
        result.value("after_remote")
    assert wait_for_free_blocks(engine) == 0


async def test_parse_failure_fails_without_default_and_uses_default_with_one(pool):
    flow = (
        FlowBuilder("parsing", max_tokens=3, seed=1, temperature=0.0)
        .step("strict", "Say hi.", parser="json")
        .step("lenient", "Say hi.", parser="json", default={"fallback": True})
        .step("uses", "{{ lenient.fallback }}")
        .build()
    )
    result = await collect(flow, {}, pool)
    strict, lenient = result.steps["strict"], result.steps["lenient"]
    if isinstance(strict, StepFinished):  # the model happened to emit JSON: nothing to check
        pytest.skip("the model produced JSON")
    assert "no JSON object or array" in strict.error and "give the step a default" in strict.error
    assert lenient.value == {"fallback": True} and "no JSON" in lenient.parse_error
    assert isinstance(result.steps["uses"], StepFinished)


async def test_timeout_fails_the_step_and_frees_its_blocks(pool, engine):
    flow = (
        FlowBuilder("slow", seed=1)
        .step("long", "Write a long story.", max_tokens=400, timeout=0.3, temperature=1.0)
        .step("next", "{{ long }}", max_tokens=2)
        .step("short", "Hi", max_tokens=2)
        .build()
    )
    result = await collect(flow, {}, pool)
    long = result.steps["long"]
    assert isinstance(long, StepFailed) and long.reason == "timeout"
    assert long.error == "step 'long' timed out after 0.3s"
    assert result.steps["next"].reason == "dependency"
    assert isinstance(result.steps["short"], StepFinished)
    assert wait_for_free_blocks(engine) == 0


async def test_cancelling_the_flow_aborts_running_steps(pool, engine):
    flow = (
        FlowBuilder("cancel", seed=1, temperature=1.0, max_tokens=400)
        .step("one", "Write a long story about the sea.")
        .step("two", "Write a long story about the sky.")
        .step("later", "{{ one }}")
        .build()
    )
    seen = []
    async with aclosing(run_flow(flow, {}, pool)) as events:
        async for event in events:
            seen.append(event)
            if sum(isinstance(e, StepDelta) for e in seen) >= 4:
                assert engine.stats()["blocks_in_use"] > 0
                break
    assert wait_for_free_blocks(engine, timeout=5) == 0
    assert not any(isinstance(e, FlowFinished) for e in seen)


async def test_cancelling_the_consumer_task_aborts_too(pool, engine):
    flow = FlowBuilder("cancel2", seed=2, temperature=1.0, max_tokens=400).step("one", "Tell a long tale.").build()
    got_delta = asyncio.Event()

    async def consume():
        async for event in run_flow(flow, {}, pool):
            if isinstance(event, StepDelta):
                got_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_delta.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_for_free_blocks(engine, timeout=5) == 0


async def test_missing_input_is_a_flow_error_before_anything_runs(pool):
    flow = FlowBuilder("needs").input("x").step("a", "{{ x }}").build()
    with pytest.raises(FlowError, match="needs input 'x'"):
        await collect(flow, {}, pool)


async def test_unknown_provider_fails_the_step_clearly(pool):
    flow = FlowBuilder("unknown").step("a", "hi", provider="nosuch:model").build()
    result = await collect(flow, {}, pool)
    assert "provider 'nosuch:model' is not available: unknown provider 'nosuch'" in result.steps["a"].error


async def test_fan_out_past_the_cap_fails_the_step_before_any_call(pool, engine):
    from vivace.flows.executor import MAX_FOR_EACH_ITEMS

    flow = (
        FlowBuilder("wide", max_tokens=2, seed=1)
        .input("count", default=str(MAX_FOR_EACH_ITEMS + 1))
        .step("each", "Say {{ item }}.", for_each="range(count | int) | list")
        .build()
    )
    result = await collect(flow, {}, pool)
    failed = result.steps["each"]
    assert isinstance(failed, StepFailed) and f"at most {MAX_FOR_EACH_ITEMS}" in failed.error
    assert not [e for e in result.events if isinstance(e, StepStarted) and e.index is not None]
    assert engine.stats()["num_waiting"] == engine.stats()["num_running"] == 0
