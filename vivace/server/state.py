"""What the API handlers share: the engine, the served name, admission limits, metrics.

Its own module so that route installers outside the server package (flows) can take it without
importing the app that installs them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.chat_continuation import render_continuation
from vivace.engine.outputs import RequestOutput
from vivace.server.admission import Admission, AdmissionRefused
from vivace.server.errors import APIError
from vivace.server.metrics import ServerMetrics
from vivace.server.protocol import ChatPromptFields
from vivace.server.request_log import log_request
from vivace.server.shapes import LogprobFormatter
from vivace.server.tool_calls import ToolPlan, template_messages


class ServerState:
    """What the handlers share: the engine, the served name, admission limits."""

    def __init__(self, engine: AsyncEngine, model_name: str, api_key: str | None, max_queue: int | None) -> None:
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        # Sequences beyond the running batch that may wait; more are refused with 429 (admission.py).
        limit = None if max_queue is None else engine.engine.config.max_num_seqs + max_queue
        self.admission = Admission(limit)
        self.draining = False  # set on shutdown: nothing new is admitted
        self.created = int(time.time())
        self.logprobs = LogprobFormatter(engine.tokenizer)
        self.metrics = ServerMetrics(engine, model_name, lambda: self.in_flight)

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered."""
        return self.admission.requests

    def observed(self) -> Callable[[AsyncIterator[RequestOutput]], AsyncIterator[RequestOutput]]:
        """A wrapper recording one response's prompts in the metrics and the request log, timed from now."""
        admitted = time.perf_counter()
        return lambda outputs: log_request(self.metrics.observe(outputs, admitted), admitted)

    def admit(self, units: int = 1) -> None:
        """Count a request that puts `units` sequences into the engine; 503 while draining, 429 when full."""
        if self.draining:
            raise APIError(503, "the server is shutting down", code="server_shutdown")
        try:
            self.admission.admit(units)
        except AdmissionRefused as e:
            raise APIError(429, str(e), code="queue_full", headers={"Retry-After": str(e.retry_after)}) from None

    def release(self, units: int = 1) -> None:
        """The request admitted with `units` has ended."""
        self.admission.release(units)

    def check_model(self, model: str | None) -> None:
        """404 unless `model` names the served model; None (omitted) means the served model."""
        if model is not None and model != self.model_name:
            raise self._not_found(model)

    def resolve_model(self, model: str | None) -> str | None:
        """The LoRA adapter `model` names (`base:adapter` or the adapter's own name), None for the base
        model (or omitted); 404 for anything else."""
        if model is None or model == self.model_name:
            return None
        base, sep, adapter = model.rpartition(":")
        name = adapter if sep and base == self.model_name else model
        if any(lora.name == name for lora in self.engine.engine.loras()):
            return name
        raise self._not_found(model)

    def _not_found(self, model: str) -> APIError:
        served = [self.model_name, *(lora.name for lora in self.engine.engine.loras())]
        return APIError(
            404,
            f"model {model!r} not found; this server serves {', '.join(map(repr, served))}",
            "model",
            "model_not_found",
        )

    def chat_prompt(
        self, request: ChatPromptFields, tools: ToolPlan | None = None, add_special_tokens: bool = False
    ) -> list[int]:
        """The conversation's token ids (tool-call history and `tools` through the template), ending in a
        generation prompt, bare, or inside the last message.

        The template places any BOS itself; `add_special_tokens` has the tokenizer add its own as well.
        """
        request.check_chat_ending()
        tokenizer = self.engine.tokenizer
        messages = [m.as_template_dict() for m in request.messages]
        messages, variables = template_messages(messages, tools or ToolPlan(), tokenizer.chat_template)
        if request.continue_final_message:
            text = render_continuation(tokenizer, messages, **variables)
        else:
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=request.add_generation_prompt, **variables
            )
        return tokenizer.encode(text, add_special_tokens=add_special_tokens)
