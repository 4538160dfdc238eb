"""What `vivace generate` and `vivace chat` talk to: the engine loaded in this process, or a running
`vivace serve` (any OpenAI-compatible server) streamed over its API when `--url` / VIVACE_URL is given."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vivace.engine.config import SamplingParams
from vivace.engine.request_params import sampling_params_from_fields

if TYPE_CHECKING:
    from vivace.engine.llm import LLM
    from vivace.engine.outputs import RequestOutput
    from vivace.providers.base import Provider

Show = Callable[[str], None]  # prints a piece of the reply as it arrives


@dataclass
class Reply:
    """A finished reply: its text, why it ended, and the error that ended it, if one did."""

    text: str
    finish_reason: str | None
    error: str | None = None


def sampling_params(sampling: dict[str, Any]) -> SamplingParams:
    """The engine's parameters for the CLI's sampling options (InvalidParameterError names a bad one)."""
    return sampling_params_from_fields(sampling)


class LocalBackend:
    """The model loaded in this process."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def chat(self, messages: list[dict[str, str]], sampling: dict[str, Any], show: Show) -> Reply:
        """Stream the assistant's reply to `messages`."""
        return self._run(self.llm.tokenizer.encode_chat(messages), sampling, show)

    def complete(self, prompt: str, sampling: dict[str, Any], show: Show) -> Reply:
        """Stream the continuation of raw `prompt` text."""
        return self._run(prompt, sampling, show)

    def _run(self, prompt: str | list[int], sampling: dict[str, Any], show: Show) -> Reply:
        stream: Iterator[RequestOutput] = self.llm.stream(prompt, sampling_params(sampling))
        reply = Reply("", None)
        with closing(stream):  # closing it (Ctrl-C) aborts the request
            for out in stream:
                completion = out.outputs[0]
                show(completion.delta)
                reply = Reply(completion.text, completion.finish_reason, out.error)
        return reply

    def close(self) -> None:
        """Nothing to release: the engine goes with the process."""


class RemoteBackend:
    """A running server, reached through its OpenAI API (the model is the one it serves)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        from vivace.bench.target import open_target

        self._loop = asyncio.Runner()
        self.provider: Provider = open_target(url, api_key)  # TargetError when it cannot be reached

    def chat(self, messages: list[dict[str, str]], sampling: dict[str, Any], show: Show) -> Reply:
        """Stream the assistant's reply to `messages` from the server."""
        return self._run(messages=list(messages), sampling=sampling, show=show)

    def complete(self, prompt: str, sampling: dict[str, Any], show: Show) -> Reply:
        """Stream the continuation of raw `prompt` text from the server."""
        return self._run(prompt=prompt, sampling=sampling, show=show)

    def _run(self, sampling: dict[str, Any], show: Show, **what: Any) -> Reply:
        from vivace.providers.base import GenerationRequest, ProviderError

        sampling_params(sampling)  # the same checks as the local engine, before anything is sent
        request = GenerationRequest(**what, **sampling)

        async def stream() -> Reply:
            parts: list[str] = []
            finish = None
            async for delta in self.provider.stream(request):
                show(delta.text)
                parts.append(delta.text)
                finish = delta.finish_reason or finish
            return Reply("".join(parts), finish)

        try:
            return self._loop.run(stream())
        except ProviderError as e:
            return Reply("", None, str(e))

    def close(self) -> None:
        """Close the connection pool and the event loop."""
        self._loop.run(self.provider.aclose())
        self._loop.close()
