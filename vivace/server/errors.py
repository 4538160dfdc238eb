"""Errors in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, and their handlers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from vivace.engine.async_engine import EngineDeadError, EngineShutdownError
from vivace.engine.chat_template import ChatTemplateError
from vivace.engine.config import InvalidParameterError
from vivace.engine.lora.manager import UnknownLoRAError
from vivace.engine.scheduler import RequestTooLargeError
from vivace.server.json_body import InvalidJSONBody, load_json
from vivace.server.tolerant import record_ignored

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error a handler returns to the client as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, _TYPES.get(self.status, "invalid_request_error"), self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def as_api_error(exc: Exception) -> APIError:
    """Map an engine or validation exception to the APIError the client sees."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UnknownLoRAError):
        return APIError(404, str(exc), exc.param, "not_found")
    if isinstance(exc, InvalidParameterError):
        return APIError(400, str(exc), exc.param, "invalid_value")
    if isinstance(exc, RequestTooLargeError):
        return APIError(400, str(exc), "messages", "context_length_exceeded")
    if isinstance(exc, ChatTemplateError):
        return APIError(400, f"the chat template rejected the messages: {exc}", "messages", "invalid_value")
    if isinstance(exc, ValidationError):
        return _validation_error(exc.errors())
    if isinstance(exc, EngineShutdownError):
        return APIError(503, str(exc), code="server_shutdown")
    if isinstance(exc, EngineDeadError):
        return APIError(503, str(exc), code="engine_dead")
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}")


def _validation_error(errors: list[Any]) -> APIError:
    """The first pydantic error, with the offending field named in both message and param."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = loc[0] if loc else None  # the top-level field; deeper parts name union members
    if first.get("type") == "missing":
        return APIError(400, f"missing required field {field!r}", field, "missing_required_parameter")
    return APIError(400, f"{'.'.join(loc)}: {first.get('msg', 'invalid value')}", field, "invalid_value")


async def parse_body(request: Request, model: type[BaseModel]) -> Any:
    """Read and validate a JSON body; malformed JSON and bad fields become 400s naming the problem."""
    raw = await request.body()
    try:
        data = load_json(raw)
    except InvalidJSONBody as e:
        raise APIError(400, str(e), e.param, "invalid_json" if e.param is None else "invalid_value") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    try:
        body = model.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e.errors()) from None
    record_ignored(request, body)
    return body


def install_handlers(app: FastAPI) -> None:
    """Every error the app can raise leaves as an OpenAI-shaped JSON body."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(list(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client left while sending its body: nothing to log, and not a server error.
        return APIError(499, "the client closed the connection", code="client_closed").response()

    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        return as_api_error(exc).response()

    # Named classes are answered inside the app; a bare Exception handler would also re-raise to uvicorn.
    for cls in (InvalidParameterError, RequestTooLargeError, ChatTemplateError, ValidationError, EngineDeadError):
        app.add_exception_handler(cls, _mapped)
    app.add_exception_handler(Exception, _mapped)
