"""The one streaming interface every provider implements.

A `GenerationRequest` (chat messages or a raw prompt, plus sampling parameters) goes in; an async
iterator of `Delta`s comes out: text as it arrives, the token count a delta carries when the provider
knows it, and on the last delta the finish reason and usage. Every provider (the local engine,
OpenAI-compatible hosts, llama.cpp, transformers, Bedrock) yields the same shapes, so the bench and
flows code never looks at which one it talks to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationRequest:
    """What to generate: exactly one of `messages` (chat) or `prompt` (raw text, no template)."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False  # keep generating to max_tokens (benchmarks); ignored where unsupported
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific body fields

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of messages or prompt")


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Delta:
    """One piece of a streamed response."""

    text: str = ""
    tokens: int | None = None  # tokens this delta carries, when the provider says
    finish_reason: str | None = None  # set on the last delta: "stop", "length", ...
    usage: Usage | None = None  # set on the last delta when the provider reports it


class ProviderError(RuntimeError):
    """A provider failed a request; `status` is the HTTP status where there was one."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable


class Provider(ABC):
    """A model behind one streaming interface; `id` is the `provider:model` it was made from."""

    id: str
    # Whether the provider honours `response_format` json_schema in `extra` (flow steps with a schema).
    structured_outputs: bool = False

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """The response as deltas; leaving the iteration early cancels the request."""

    async def complete(self, request: GenerationRequest) -> tuple[str, Delta]:
        """The whole text and the last delta (finish reason, usage)."""
        parts: list[str] = []
        last = Delta()
        async for delta in self.stream(request):
            parts.append(delta.text)
            last = delta
        return "".join(parts), last

    async def aclose(self) -> None:  # noqa: B027 (an optional hook: not every provider holds anything)
        """Release connections, engines or threads the provider holds."""
