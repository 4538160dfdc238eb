"""What the API handlers share: the engine, the served name, admission limits, metrics.

Its own module so that route installers outside the server package (flows) can take it without
importing the app that installs them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.outputs import RequestOutput
from vivace.server.errors import APIError
from vivace.server.metrics import ServerMetrics
from vivace.server.protocol import ChatCompletionRequest
from vivace.server.shapes import LogprobFormatter
from vivace.server.tool_calls import ToolPlan, template_messages

RETRY_AFTER_SECONDS = 1  # what a refused client is told to wait: the batch turns over in about that


class ServerState:
    """What the handlers share: the engine, the served name, admission limits."""

    def __init__(self, engine: AsyncEngine, model_name: str, api_key: str | None, max_queue: int | None) -> None:
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        # Requests beyond the running batch that may wait; more are refused with 429.
        self.max_in_flight = None if max_queue is None else engine.engine.config.max_num_seqs + max_queue
        self.in_flight = 0
        self.draining = False  # set on shutdown: nothing new is admitted
        self.created = int(time.time())
        self.logprobs = LogprobFormatter(engine.tokenizer)
        self.metrics = ServerMetrics(engine, lambda: self.in_flight)

    def observed(self) -> Callable[[AsyncIterator[RequestOutput]], AsyncIterator[RequestOutput]]:
        """A wrapper recording one response's prompts in the metrics, timed from now."""
        admitted = time.perf_counter()
        return lambda outputs: self.metrics.observe(outputs, admitted)

    def admit(self) -> None:
        if self.draining:
            raise APIError(503, "the server is shutting down", code="server_shutdown")
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            raise APIError(
                429,
                f"the server is full ({self.in_flight} requests in flight); retry later",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise APIError(
                404, f"model {model!r} not found; this server serves {self.model_name!r}", "model", "model_not_found"
            )

    def chat_prompt(self, request: ChatCompletionRequest, tools: ToolPlan | None = None) -> list[int]:
        """The prompt's token ids: the messages (tool-call history included) and `tools` through the template."""
        tokenizer = self.engine.tokenizer
        messages = [m.as_template_dict() for m in request.messages]
        messages, variables = template_messages(messages, tools or ToolPlan(), tokenizer.chat_template)
        return tokenizer.encode_chat(messages, **variables)
