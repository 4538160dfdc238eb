"""The events a flow run streams: what the CLI draws, the server sends as SSE, and tests check.

`index` is None for a step's own events and the item number for the sub-steps of a `for_each`
step; times are seconds since the flow started.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass
class FlowEvent:
    """Base of every event; `kind` is its SSE event name."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The event's fields, ready for json.dumps."""
        return asdict(self)


@dataclass
class StepStarted(FlowEvent):
    """A step's inputs are ready and it has been submitted (`items`: how many a for_each step fans out to).

    A for_each item's own event carries its `index` and `item`: the item as text (JSON unless a string).
    """

    kind: ClassVar[str] = "step_started"
    step: str
    index: int | None = None
    at: float = 0.0
    items: int | None = None
    item: str | None = None


@dataclass
class StepDelta(FlowEvent):
    """New text of a running step."""

    kind: ClassVar[str] = "delta"
    step: str
    text: str
    index: int | None = None


@dataclass
class StepFinished(FlowEvent):
    """A step's whole text, parsed value, token counts and timings.

    `parse_error` is set when the parser failed and the step's `default` was used as `value`.
    """

    kind: ClassVar[str] = "step_finished"
    step: str
    text: str
    value: Any
    index: int | None = None
    tokens: int = 0  # completion tokens
    prompt_tokens: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    finish_reason: str | None = None
    parse_error: str | None = None

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration": self.duration}


@dataclass
class StepFailed(FlowEvent):
    """A step did not finish: `reason` is error, timeout, dependency (an input step failed) or cancelled."""

    kind: ClassVar[str] = "step_failed"
    step: str
    error: str
    reason: str = "error"
    index: int | None = None
    at: float = 0.0


@dataclass
class FlowFinished(FlowEvent):
    """The run's end: wall time, critical path (from the step timings and dependencies), sum of step times.

    `step_time_sum` adds every model call (each for_each item separately): the wall time the same
    calls would take one after another at the speed they ran here.
    """

    kind: ClassVar[str] = "flow_finished"
    flow: str
    ok: bool
    wall_time: float
    critical_path_time: float
    step_time_sum: float
    critical_path: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tokens: int = 0
