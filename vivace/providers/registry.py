"""`get_provider("kind:model")`: provider ids to Provider objects.

Ids: `local:PATH` (`local:` = the packaged model), `openai:MODEL`, `fireworks:MODEL`, `groq:MODEL`,
`together:MODEL`, `openai-compatible:MODEL@BASE_URL`, `llamacpp:GGUF_PATH`, `hf:PATH`, `bedrock:MODEL_ID`.
A comma-separated list (`"groq:m,together:m"`) is an ordered fallback: the next provider is tried
when one fails before streaming anything (see fallback.py). Remote providers (HTTP, Bedrock) retry
429/5xx/connection errors before the first token (see retry.py); `retries=0` turns that off.
"""

from __future__ import annotations

from typing import Any

from vivace.providers.base import Provider

KINDS = ("local", "openai", "fireworks", "groq", "together", "openai-compatible", "llamacpp", "hf", "bedrock")
_REMOTE = ("openai", "fireworks", "groq", "together", "openai-compatible", "bedrock")
DEFAULT_RETRIES = 2


class UnknownProviderError(ValueError):
    """A provider id that names no known provider or lacks its model part."""


def parse_spec(spec: str) -> tuple[str, str]:
    """Split `kind:model` into its parts, checking the kind."""
    kind, colon, model = spec.strip().partition(":")
    if not colon:
        raise UnknownProviderError(
            f"provider id {spec!r} has no ':'; expected KIND:MODEL with KIND one of {list(KINDS)}"
        )
    if kind not in KINDS:
        raise UnknownProviderError(f"unknown provider {kind!r} in {spec!r}; known: {list(KINDS)}")
    if not model and kind != "local":
        raise UnknownProviderError(f"provider id {spec!r} names no model; expected {kind}:MODEL")
    return kind, model


def get_provider(spec: str, **options: Any) -> Provider:
    """The provider for an id (or a comma-separated fallback list); options go to the provider's constructor.

    `retries` (int, default 2 for remote providers) and `backoff` (base seconds, default 0.5) set the
    retry policy; every other option is passed to each provider built (engine options for `local:`,
    `api_key` / `base_url` / `timeout` / `connect_timeout` / `read_timeout` for HTTP ones, ...).
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise UnknownProviderError("empty provider id")
    if len(parts) > 1:
        from vivace.providers.fallback import FallbackProvider

        return FallbackProvider([get_provider(p, **options) for p in parts])
    options = dict(options)
    retries = options.pop("retries", None)
    backoff = options.pop("backoff", None)
    kind, model = parse_spec(parts[0])
    provider = _build(kind, model, options)
    if retries is None:
        retries = DEFAULT_RETRIES if kind in _REMOTE else 0
    if retries > 0:
        from vivace.providers.retry import RetryingProvider, RetryPolicy

        policy = (
            RetryPolicy(max_retries=retries)
            if backoff is None
            else RetryPolicy(max_retries=retries, base_delay=backoff)
        )
        provider = RetryingProvider(provider, policy)
    return provider


def _build(kind: str, model: str, options: dict[str, Any]) -> Provider:
    if kind == "local":
        from vivace.providers.local import LocalProvider

        return LocalProvider.from_path(model or None, **options)
    if kind in ("openai", "fireworks", "groq", "together"):
        from vivace.providers.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider.hosted(kind, model, **options)
    if kind == "openai-compatible":
        from vivace.providers.openai_compat import OpenAICompatibleProvider

        name, at, base_url = model.rpartition("@")
        if not at or not name or not base_url:
            raise UnknownProviderError(
                f"openai-compatible:{model} needs MODEL@BASE_URL, e.g. openai-compatible:my-model@http://127.0.0.1:8000/v1"
            )
        return OpenAICompatibleProvider.compatible(name, base_url, **options)
    if kind == "llamacpp":
        from vivace.providers.llamacpp import LlamaCppProvider

        return LlamaCppProvider(model, **options)
    if kind == "hf":
        from vivace.providers.hf import HFProvider

        return HFProvider(model, **options)
    from vivace.providers.bedrock import BedrockProvider

    return BedrockProvider(model, **options)
