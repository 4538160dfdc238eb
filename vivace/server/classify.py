"""POST /v1/classify: label probabilities for a text, in vivace's shape or LLaMbA's.

vivace's body is `{text, labels, template?}`; LLaMbA's is `{prompt, question, validResponses}` (the
text, what to ask about it, the options). Both answer with the chosen label, its index among the
options, and every option's probability. Prompts are built and tokenized off the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vivace.engine.classify import classify_requests, label_probabilities
from vivace.engine.classify_prompt import check_labels
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.outputs import RequestOutput
from vivace.server.protocol import ClassifyRequest
from vivace.server.state import ServerState

SCORE_ONLY = SamplingParams(max_tokens=1, temperature=0.0)


@dataclass
class ClassifyTask:
    """What to score, whichever shape the body came in; `labels_param` names the labels' field."""

    text: str
    labels: list[str]
    template: str | None
    question: str | None
    labels_param: str


def classify_task(body: ClassifyRequest) -> ClassifyTask:
    """The body's text and options (checked, see classify_prompt.py); a missing, mixed or bad field is an
    InvalidParameterError naming it."""
    if body.validResponses is not None:
        if body.labels is not None or body.text is not None:
            raise InvalidParameterError("validResponses", "give either {text, labels} or {prompt, validResponses}")
        if body.prompt is None:
            raise InvalidParameterError("prompt", "is required with validResponses")
        task = ClassifyTask(body.prompt, body.validResponses, body.template, body.question, "validResponses")
    else:
        if body.text is None:
            raise InvalidParameterError("text", "is required (or give LLaMbA's prompt and validResponses)")
        if body.labels is None:
            raise InvalidParameterError("labels", "is required")
        if body.prompt is not None:
            raise InvalidParameterError("prompt", "goes with validResponses, not with text and labels")
        task = ClassifyTask(body.text, body.labels, body.template, body.question, "labels")
    check_labels(task.labels, task.labels_param)  # before admission counts them
    return task


async def classify(state: ServerState, task: ClassifyTask) -> dict[str, Any]:
    """Score every option over one shared prefix and return the response body."""
    requests = await asyncio.to_thread(
        classify_requests,
        state.engine.tokenizer,
        task.text,
        task.labels,
        task.template,
        task.question,
        task.labels_param,
    )
    base = f"cls-{uuid.uuid4().hex}"
    observe = state.observed()
    outs = await asyncio.gather(
        *(
            _last(observe(state.engine.generate(ids, SCORE_ONLY, request_id=f"{base}-{i}", score_from=score_from)))
            for i, (ids, score_from) in enumerate(requests)
        )
    )
    probs = label_probabilities(task.labels, [[t.logprob for t in o.prompt_logprobs or []] for o in outs])
    index = max(range(len(task.labels)), key=lambda i: probs[task.labels[i]])
    return {
        "object": "classification",
        "model": state.model_name,
        "label": task.labels[index],
        "index": index,
        "probabilities": probs,
        "usage": {"prompt_tokens": sum(len(o.prompt_token_ids) for o in outs)},
    }


async def _last(outputs: AsyncIterator[RequestOutput]) -> RequestOutput:
    final = None
    async for out in outputs:
        final = out
    return final  # type: ignore[return-value]
