"""`bedrock:MODEL_ID`: Amazon Bedrock's ConverseStream through boto3 (optional extra `bedrock`).

Credentials and region come from the usual AWS environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION / AWS_DEFAULT_REGION, instance roles). boto3 is blocking,
so each request runs on a worker thread; botocore's own retries are off (retry.py retries, before
the first token only).
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage
from vivace.providers.thread_stream import iterate_in_thread

_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_STATUS_OF_CODE = {
    "ThrottlingException": 429,
    "throttlingException": 429,
    "ServiceUnavailableException": 503,
    "serviceUnavailableException": 503,
    "InternalServerException": 500,
    "internalServerException": 500,
    "ModelStreamErrorException": 500,
    "modelStreamErrorException": 500,
    "ModelNotReadyException": 503,
    "ModelTimeoutException": 408,
    "ValidationException": 400,
    "validationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
}
_RETRYABLE_CODES = {"ThrottlingException", "throttlingException", "ModelNotReadyException", "ModelTimeoutException"}


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ProviderError("bedrock: providers need boto3; install it with `pip install 'vivace[bedrock]'`") from None
    return boto3


def bedrock_messages(request: GenerationRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system, messages) in Converse's shape from OpenAI-style messages or a raw prompt (one user turn)."""
    if request.prompt is not None:
        return [], [{"role": "user", "content": [{"text": request.prompt}]}]
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages or []):
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ProviderError(f"bedrock: message {i} has no text content", status=400)
        if role == "system":
            system.append({"text": content})
        elif role in ("user", "assistant"):
            if messages and messages[-1]["role"] == role:  # Converse wants alternating turns: merge
                messages[-1]["content"].append({"text": content})
            else:
                messages.append({"role": role, "content": [{"text": content}]})
        else:
            raise ProviderError(
                f"bedrock: message {i} has role {role!r}; expected system, user or assistant", status=400
            )
    return system, messages


def converse_kwargs(model_id: str, request: GenerationRequest) -> dict[str, Any]:
    """The converse_stream arguments for a request (`extra` is merged in as top-level arguments)."""
    system, messages = bedrock_messages(request)
    kwargs: dict[str, Any] = {"modelId": model_id, "messages": messages}
    if system:
        kwargs["system"] = system
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("max_tokens", "maxTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("stop", "stopSequences"),
    ):
        value = getattr(request, ours)
        if value is not None:
            config[theirs] = value
    if config:
        kwargs["inferenceConfig"] = config
    if request.top_k is not None:  # not part of Converse; the models that take it read it from here
        kwargs["additionalModelRequestFields"] = {"top_k": request.top_k}
    kwargs.update(request.extra)
    return kwargs


def as_provider_error(model_id: str, exc: Exception) -> ProviderError | None:
    """A ProviderError for a botocore failure, or None for anything else."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError):
        return ProviderError(
            f"bedrock:{model_id}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
            status=401,
        )
    if isinstance(exc, bx.ClientError):  # EventStreamError (mid-stream exception events) is one too
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = _STATUS_OF_CODE.get(code) or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        retryable = code in _RETRYABLE_CODES or (status is not None and (status == 429 or status >= 500))
        return ProviderError(
            f"bedrock:{model_id}: {code}: {error.get('Message', exc)}", status=status, retryable=retryable
        )
    if isinstance(
        exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError)
    ):
        return ProviderError(f"bedrock:{model_id}: connection failed ({type(exc).__name__}: {exc})", retryable=True)
    return None


class BedrockProvider(Provider):
    """Streams Converse responses; `client` (a bedrock-runtime boto3 client) overrides the one built here."""

    def __init__(
        self,
        model_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        profile: str | None = None,
        client: Any = None,
    ) -> None:
        self.model_id = model_id
        self.id = f"bedrock:{model_id}"
        if client is None:
            boto3 = _import_boto3()
            from botocore.config import Config
            from botocore.exceptions import NoRegionError, ProfileNotFound

            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
            region = region or os.environ.get("AWS_REGION")  # older botocore reads only AWS_DEFAULT_REGION
            try:
                # A session of its own: boto3's default session caches credentials from whenever it was first used.
                session = boto3.session.Session(profile_name=profile)
                client = session.client("bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config)
            except ProfileNotFound as exc:
                raise ProviderError(f"{self.id}: {exc}", status=400) from None
            except NoRegionError:
                raise ProviderError(
                    f"{self.id}: no AWS region; set AWS_REGION (or AWS_DEFAULT_REGION) or pass region=", status=400
                ) from None
        self.client = client

    def __repr__(self) -> str:
        return f"BedrockProvider(id={self.id!r})"

    def _events(self, kwargs: dict[str, Any], stop: threading.Event) -> Iterator[dict[str, Any]]:
        response = self.client.converse_stream(**kwargs)
        stream = response["stream"]
        try:
            for event in stream:
                yield event
                if stop.is_set():
                    break
        finally:
            stream.close()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """contentBlockDelta texts as deltas; the last delta carries messageStop's reason and metadata's usage."""
        kwargs = converse_kwargs(self.model_id, request)
        finish: str | None = None
        usage: Usage | None = None
        try:
            async for event in iterate_in_thread(lambda stop: self._events(kwargs, stop), name="vivace-bedrock"):
                if "contentBlockDelta" in event:
                    text = event["contentBlockDelta"].get("delta", {}).get("text")
                    if text:
                        yield Delta(text=text)
                elif "messageStop" in event:
                    reason = event["messageStop"].get("stopReason", "")
                    finish = _STOP_REASONS.get(reason, reason)
                elif "metadata" in event and "usage" in event["metadata"]:
                    u = event["metadata"]["usage"]
                    usage = Usage(int(u.get("inputTokens", 0)), int(u.get("outputTokens", 0)))
        except ProviderError:
            raise
        except Exception as exc:
            error = as_provider_error(self.model_id, exc)
            if error is None:
                raise
            raise error from None
        if finish is None:
            raise ProviderError(f"{self.id}: stream ended without messageStop", status=502)
        yield Delta(finish_reason=finish, usage=usage)
