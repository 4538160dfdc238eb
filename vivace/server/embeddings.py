"""POST /v1/embeddings: each input's embedding from the engine (pooling.py: the mean of the prompt's
final hidden states, L2-normalized), as floats or as base64 of little-endian float32 (OpenAI's shapes)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request

from vivace.engine.config import InvalidParameterError
from vivace.engine.pooling import EMBEDDING_PARAMS
from vivace.engine.scheduler import RequestTooLargeError
from vivace.server.errors import APIError, parse_body
from vivace.server.state import ServerState
from vivace.server.tolerant import TolerantModel

MAX_INPUTS = 256  # inputs per request: each one is a prompt the engine prefills


class EmbeddingRequest(TolerantModel):
    """OpenAI's embeddings body; `input` is text, a list of texts, token ids or a list of token-id lists."""

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None  # known; only the model's own width can be honoured
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        """The inputs as engine prompts; empty or too many is an error naming `input`."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if not value:
            raise InvalidParameterError("input", "must not be empty")
        if isinstance(value[0], int):
            return [list(value)]  # type: ignore[arg-type]
        if len(value) > MAX_INPUTS:
            raise InvalidParameterError("input", f"at most {MAX_INPUTS} inputs per request, got {len(value)}")
        return list(value)  # type: ignore[arg-type]


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """The embedding as JSON floats, or base64 of its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def install_embeddings(v1: APIRouter, state: ServerState) -> None:
    """Add POST /embeddings to the /v1 router."""
    hidden_size = state.engine.engine.model_config.hidden_size

    @v1.post("/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body: EmbeddingRequest = await parse_body(request, EmbeddingRequest)
        state.check_model(body.model)
        if body.dimensions is not None and body.dimensions != hidden_size:
            raise InvalidParameterError(
                "dimensions", f"this model's embeddings have {hidden_size} dimensions; got {body.dimensions}"
            )
        prompts = body.inputs()
        base = f"embd-{uuid.uuid4().hex}"
        state.admit()
        tasks = [asyncio.ensure_future(_final(state, p, f"{base}-{i}")) for i, p in enumerate(prompts)]
        try:
            outs = await asyncio.gather(*tasks)
        except BaseException as e:  # one input failed (or the handler was cancelled): abort the others too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The engine names its own field; the client's is `input`.
            if isinstance(e, InvalidParameterError) and e.param == "prompt":
                raise InvalidParameterError("input", str(e)[len("prompt: ") :]) from None
            if isinstance(e, RequestTooLargeError):
                raise APIError(400, str(e), "input", "context_length_exceeded") from None
            raise
        finally:
            state.release()
        data = []
        for i, out in enumerate(outs):
            if out.embedding is None:
                raise APIError(500, f"the engine failed on input {i}: {out.error}", code="engine_error")
            data.append({"object": "embedding", "index": i, "embedding": encode(out.embedding, body.encoding_format)})
        tokens = sum(len(o.prompt_token_ids) for o in outs)
        return {
            "object": "list",
            "data": data,
            "model": state.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


async def _final(state: ServerState, prompt: str | list[int], request_id: str) -> Any:
    final = None
    async for out in state.engine.generate(prompt, EMBEDDING_PARAMS, request_id=request_id, pool=True):
        final = out
    return final
