"""vLLM's utility routes: POST /tokenize and /detokenize (its request and response shapes), GET /version."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from vivace import __version__
from vivace.engine.config import InvalidParameterError
from vivace.server.errors import parse_body
from vivace.server.protocol import ChatPromptFields
from vivace.server.state import ServerState
from vivace.server.tolerant import TolerantModel


class TokenizeCompletionRequest(TolerantModel):
    """A text prompt, tokenized as /v1/completions would (special tokens, such as BOS, added by default)."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatRequest(ChatPromptFields):
    """A conversation, tokenized as /v1/chat/completions would (the template places any BOS)."""

    model: str | None = None
    add_special_tokens: bool = False
    return_token_strs: bool = False


class DetokenizeRequest(TolerantModel):
    model: str | None = None
    tokens: list[int]


def install_tokenize_routes(app: FastAPI, state: ServerState) -> None:
    """Add /tokenize, /detokenize and /version to `app` (behind the API key like every route: security.py)."""
    router = APIRouter()
    tokenizer = state.engine.tokenizer

    @router.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        chat = await _is_chat(request)
        body: Any = await parse_body(request, TokenizeChatRequest if chat else TokenizeCompletionRequest)
        state.check_model(body.model)
        if chat:
            ids = await asyncio.to_thread(state.chat_prompt, body, None, body.add_special_tokens)
        else:
            ids = await asyncio.to_thread(tokenizer.encode, body.prompt, body.add_special_tokens)
        strs = tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return {
            "count": len(ids),
            "max_model_len": state.engine.engine.max_model_len,
            "tokens": ids,
            "token_strs": strs,
        }

    @router.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, str]:
        body: DetokenizeRequest = await parse_body(request, DetokenizeRequest)
        state.check_model(body.model)
        vocab = tokenizer.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise InvalidParameterError("tokens", f"token ids must be in [0, {vocab}), got {bad[:5]}")
        return {"prompt": await asyncio.to_thread(tokenizer.decode, body.tokens)}

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": __version__}

    app.include_router(router)


async def _is_chat(request: Request) -> bool:
    """Whether a /tokenize body is the chat form (it has `messages`), as vLLM tells the two apart."""
    try:
        data = json.loads(await request.body())
    except ValueError:
        return False  # parse_body reports the malformed body
    return isinstance(data, dict) and "messages" in data
