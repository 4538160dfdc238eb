"""Bench targets: a provider id (`local:`, `openai-compatible:MODEL@URL`, ...) or a server's base URL."""

from __future__ import annotations

from typing import Any

import httpx

from vivace.providers.base import Provider


class TargetError(ValueError):
    """A bench target that cannot be resolved to a provider."""


def is_url(target: str) -> bool:
    """True for an http(s) base URL."""
    return target.startswith(("http://", "https://"))


def api_base(url: str) -> str:
    """The OpenAI API base of a server URL: `http://host:port` and `.../v1` both give `.../v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def served_model(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> str:
    """The first model a server lists at /v1/models."""
    url = api_base(base_url) + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise TargetError(f"cannot reach {url}: {e}") from None
    if response.status_code != 200:
        raise TargetError(
            f"{url} answered HTTP {response.status_code}; pass a provider id "
            f"(openai-compatible:MODEL@{api_base(base_url)}) to name the model yourself"
        )
    try:
        models = response.json()["data"]
        return str(models[0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise TargetError(f"{url} lists no models") from None


def provider_spec(target: str, api_key: str | None = None) -> str:
    """The provider id for a target: a base URL becomes openai-compatible with the model it serves."""
    if not target:
        raise TargetError("empty bench target; give a provider id (local:, openai:MODEL, ...) or a base URL")
    if is_url(target):
        return f"openai-compatible:{served_model(target, api_key)}@{api_base(target)}"
    return target


def open_target(target: str, api_key: str | None = None, **options: Any) -> Provider:
    """The provider for a target, without retries (a benchmark counts failures instead of hiding them)."""
    from vivace.engine.loaders.errors import ModelLoadError
    from vivace.providers.registry import get_provider

    spec = provider_spec(target, api_key)
    if api_key is not None and not spec.startswith("local:"):
        options["api_key"] = api_key
    options.setdefault("retries", 0)
    try:
        return get_provider(spec, **options)
    except (ValueError, ModelLoadError) as e:  # a bad id or option, a model that cannot load
        raise TargetError(str(e)) from None
