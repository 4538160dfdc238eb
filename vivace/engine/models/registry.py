"""Model registry: architecture name (GGUF `general.architecture`, HF `model_type`) -> model class.

A family registers itself with `@register_model("name", ...)` in its own module; `FAMILY_MODULES`
lists the modules that hold the built-in families, imported when the registry is first asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from vivace.engine.config import ModelConfig
from vivace.engine.loaders.errors import UnsupportedModelError

if TYPE_CHECKING:
    from vivace.engine.kernels.block_quant import QuantBlocks
    from vivace.engine.kernels.select import Kernels
    from vivace.engine.lora.manager import LoRAManager
    from vivace.engine.models.blocks import DecoderModel

FAMILY_MODULES = ("vivace.engine.models.llama", "vivace.engine.models.qwen3", "vivace.engine.models.gemma3")

_REGISTRY: dict[str, type[DecoderModel]] = {}


def register_model(*architectures: str) -> Callable[[type[DecoderModel]], type[DecoderModel]]:
    """Class decorator: serve these architecture names with the decorated model class."""

    def register(cls: type[DecoderModel]) -> type[DecoderModel]:
        for name in architectures:
            existing = _REGISTRY.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(f"architecture {name!r} is already served by {existing.__name__}")
            _REGISTRY[name] = cls
        return cls

    return register


def unregister_model(*architectures: str) -> None:
    """Forget architecture names (for tests that register a family of their own)."""
    for name in architectures:
        _REGISTRY.pop(name, None)


def _load_families() -> None:
    for module in FAMILY_MODULES:
        importlib.import_module(module)


def supported_architectures() -> list[str]:
    """Every architecture name a model class is registered for, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def model_class(architecture: str) -> type[DecoderModel]:
    """The class serving `architecture`; UnsupportedModelError naming the supported ones otherwise."""
    _load_families()
    try:
        return _REGISTRY[architecture]
    except KeyError:
        raise UnsupportedModelError(
            f"architecture {architecture!r} is not supported; supported: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build_model(
    cfg: ModelConfig,
    weights: dict[str, torch.Tensor],
    dtype: torch.dtype,
    quantization: str,
    kernels: Kernels,
    blocks: dict[str, QuantBlocks] | None = None,
    lora: LoRAManager | None = None,
    hybrid_kv: bool = True,
) -> DecoderModel:
    """The model for `cfg.architecture`, built from HF-named weights (and a GGUF's blocks) with the given
    kernels, adapter slots from `lora` when given, and a KV group per kind of layer unless `hybrid_kv` is off."""
    return model_class(cfg.architecture)(
        cfg, weights, dtype, quantization, kernels, blocks=blocks, lora=lora, hybrid_kv=hybrid_kv
    )
