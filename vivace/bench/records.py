"""What a benchmark run records: every request's timeline, grouped by load level."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Chunk:
    """One streamed piece of a response: when it arrived (seconds after its request was sent)."""

    t: float
    text: str
    tokens: int  # output tokens this chunk carries (the provider's count, else the tokenizer's)


@dataclass
class RequestRecord:
    """One request's timeline; times are seconds, `send` from the level's start, the rest from `send`."""

    index: int
    send: float
    chunks: list[Chunk] = field(default_factory=list)
    end: float | None = None  # when the stream finished (or failed), after send
    error: str | None = None
    status: int | None = None  # HTTP status of a failure, where there was one
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # the server's usage where given, else the tokenizer's count
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request finished without an error."""
        return self.error is None

    @property
    def text(self) -> str:
        """The whole response text."""
        return "".join(c.text for c in self.chunks)


@dataclass
class LevelResult:
    """The requests of one load level (a concurrency or a request rate) and its wall time."""

    mode: str  # "concurrency" or "rate"
    value: float  # the concurrency (requests in flight) or the rate (requests/s; inf = all at once)
    duration: float  # wall seconds from the first send to the last end
    records: list[RequestRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        """A short name for the level: 'c=4' or 'rate=2.0/s'."""
        return f"c={int(self.value)}" if self.mode == "concurrency" else f"rate={self.value:g}/s"
