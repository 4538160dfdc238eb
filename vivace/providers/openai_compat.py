"""OpenAI-compatible hosts (OpenAI, Fireworks, Groq, Together, vivace, vLLM, ...) over httpx + SSE."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage
from vivace.providers.credentials import Secret, find_api_key, require_api_key
from vivace.providers.sse import SSEParseError, iter_sse

# provider -> (base URL, API key variable)
HOSTS: dict[str, tuple[str, str]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together": ("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
}
COMPATIBLE_KEY_ENV = "OPENAI_COMPATIBLE_API_KEY"
_STATUS_OF_TYPE = {
    "rate_limit_error": 429,
    "server_error": 500,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


# httpx's default pool (100 connections, 20 kept alive) would queue requests past 100 in flight and
# reconnect past 20, distorting a benchmark above those concurrencies. Callers (the bench load
# generator, flows) already bound how many requests are in flight, so the pool grows to that load.
_UNBOUNDED_POOL = httpx.Limits(max_connections=None, max_keepalive_connections=None)


class OpenAICompatibleProvider(Provider):
    """Chat messages go to /chat/completions, raw prompts to /completions, both streamed with usage."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: Secret | str | None = None,
        id: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        read_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.id = id or f"openai-compatible:{model}@{self.base_url}"
        self._key = Secret(api_key) if isinstance(api_key, str) else api_key
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout, read=read_timeout or timeout)
        self._headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def hosted(
        cls, host: str, model: str, *, api_key: str | None = None, base_url: str | None = None, **options: Any
    ) -> OpenAICompatibleProvider:
        """A known host (`openai`, `fireworks`, `groq`, `together`); its key from the environment or config file."""
        if host not in HOSTS:
            raise ValueError(f"unknown host {host!r}; known: {sorted(HOSTS)}")
        default_url, env_var = HOSTS[host]
        key = require_api_key(host, env_var, api_key)
        return cls(model, base_url or default_url, api_key=key, id=f"{host}:{model}", **options)

    @classmethod
    def compatible(
        cls, model: str, base_url: str, *, api_key: str | None = None, **options: Any
    ) -> OpenAICompatibleProvider:
        """Any OpenAI-compatible server; a key is optional (`api_key`, OPENAI_COMPATIBLE_API_KEY or config)."""
        key = find_api_key("openai-compatible", COMPATIBLE_KEY_ENV, api_key)
        return cls(model, base_url, api_key=key, **options)

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider(id={self.id!r}, base_url={self.base_url!r}, api_key={self._key!r})"

    def _http(self) -> httpx.AsyncClient:
        # An AsyncClient's pool belongs to one event loop; callers on a new loop get a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=_UNBOUNDED_POOL)
            self._client_loop = loop
        return self._client

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "stream": True, "stream_options": {"include_usage": True}}
        if request.messages is not None:
            path = "/chat/completions"
            body["messages"] = request.messages
        else:
            path = "/completions"
            body["prompt"] = request.prompt
        for name in ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.ignore_eos:  # vLLM's extension (vivace accepts it); strict hosts reject unknown fields
            body["ignore_eos"] = True
        body.update(request.extra)
        return path, body

    def _error(self, message: str, **kwargs: Any) -> ProviderError:
        text = f"{self.id}: {message}"
        return ProviderError(self._key.redact(text) if self._key else text, **kwargs)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """POST with stream=True and yield each content chunk; the last delta has finish_reason and usage."""
        path, body = self._body(request)
        headers = {"Accept": "text/event-stream", **self._headers}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        finish: str | None = None
        usage: Usage | None = None
        try:
            async with self._http().stream("POST", self.base_url + path, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    raise await self._http_error(response)
                async with aclosing(iter_sse(response)) as events:
                    async for event in events:
                        if event.done:
                            break
                        data = event.data or {}
                        if "error" in data or event.event == "error":
                            raise self._stream_error(data)
                        if data.get("usage"):
                            usage = Usage(
                                int(data["usage"].get("prompt_tokens") or 0),
                                int(data["usage"].get("completion_tokens") or 0),
                            )
                        for choice in data.get("choices") or []:
                            if choice.get("index", 0) != 0:
                                continue
                            text = (
                                (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
                            )
                            if text:
                                yield Delta(text=text)
                            finish = choice.get("finish_reason") or finish
        except httpx.TimeoutException as exc:
            raise self._error(f"timed out ({type(exc).__name__})", retryable=True) from None
        except httpx.TransportError as exc:  # connect errors, dropped connections
            raise self._error(f"connection failed ({type(exc).__name__}: {exc})", retryable=True) from None
        except SSEParseError as exc:
            raise self._error(str(exc), status=502) from None
        if finish is None:
            raise self._error("stream ended without a finish_reason", status=502, retryable=False)
        yield Delta(finish_reason=finish, usage=usage)

    async def _http_error(self, response: httpx.Response) -> ProviderError:
        await response.aread()
        message = response.text[:500]
        try:
            payload = response.json()
            err = payload.get("error", payload) if isinstance(payload, dict) else payload
            message = err.get("message", message) if isinstance(err, dict) else str(err)
        except ValueError:
            pass
        return self._error(
            f"HTTP {response.status_code}: {message}",
            status=response.status_code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            retryable=_retryable(response.status_code),
        )

    def _stream_error(self, data: dict[str, Any]) -> ProviderError:
        err = data.get("error", data)
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        code = err.get("code") if isinstance(err, dict) else None
        status = code if isinstance(code, int) else None
        if status is None and isinstance(err, dict):  # OpenAI's error types name the class of failure
            status = _STATUS_OF_TYPE.get(str(err.get("type")))
        return self._error(
            f"error in stream: {message}", status=status, retryable=status is not None and _retryable(status)
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None and not self._client.is_closed:
            try:
                await self._client.aclose()
            except RuntimeError:  # its event loop is already closed; nothing left to release
                pass
        self._client = None
