"""Providers: `provider:model` ids behind one streaming interface (see base.py, registry.py)."""

from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage
from vivace.providers.registry import get_provider

__all__ = ["Delta", "GenerationRequest", "Provider", "ProviderError", "Usage", "get_provider"]
