"""Providers: `provider:model` ids behind one streaming interface (see base.py)."""

from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage

__all__ = ["Delta", "GenerationRequest", "Provider", "ProviderError", "Usage"]
