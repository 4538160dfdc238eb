"""Model loading: GGUF files and HF-layout directories, both yielding a LoadedModel."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from vivace.engine.loaders.errors import (
    CorruptModelError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from vivace.engine.loaders.types import LoadedModel

__all__ = [
    "CorruptModelError",
    "ModelLoadError",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "load_model",
]


def load_model(path: str | None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a .gguf file or an HF directory (config.json + safetensors); a packaged model's short name
    ("smollm2", "gemma3") loads it, None the packaged default."""
    # Imported here: importing loaders.errors alone need not load every format's reader.
    from vivace.engine.loaders.default_model import resolve_model_path
    from vivace.engine.loaders.gguf import load_gguf
    from vivace.engine.loaders.hf_dir import load_hf_dir

    path = resolve_model_path(path)
    if os.path.isdir(path):
        return load_hf_dir(path, dtype)
    if os.path.isfile(path):
        return load_gguf(path, dtype)
    raise ModelNotFoundError(f"model path {path} does not exist (expected a .gguf file or an HF model directory)")
