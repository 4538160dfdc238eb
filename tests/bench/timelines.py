"""Hand-built request timelines whose metrics are worked out by hand in the tests."""

from __future__ import annotations

from vivace.bench.records import Chunk, LevelResult, RequestRecord


def record_a() -> RequestRecord:
    """An empty role chunk at 0.10, content at 0.25 (1 token), 0.35 (2 tokens), 0.55 (1 token); ends 0.60."""
    return RequestRecord(
        index=0,
        send=0.0,
        end=0.60,
        prompt_tokens=10,
        output_tokens=4,
        finish_reason="length",
        chunks=[Chunk(0.10, "", 0), Chunk(0.25, "Hello", 1), Chunk(0.35, " world", 2), Chunk(0.55, "!", 1)],
    )


def record_b() -> RequestRecord:
    """Content at 0.5 and 1.0 (1 token each); ends 1.0."""
    return RequestRecord(
        index=1,
        send=0.2,
        end=1.0,
        prompt_tokens=20,
        output_tokens=2,
        finish_reason="stop",
        chunks=[Chunk(0.5, "a", 1), Chunk(1.0, "b", 1)],
    )


def record_failed() -> RequestRecord:
    """A request the server refused."""
    return RequestRecord(index=2, send=0.4, end=0.05, error="HTTP 500: boom", status=500, prompt_tokens=5)


def level(mode: str = "concurrency", value: float = 2.0, duration: float = 2.0) -> LevelResult:
    """Records A, B and the failed one over a 2 s level."""
    return LevelResult(mode=mode, value=value, duration=duration, records=[record_a(), record_b(), record_failed()])
