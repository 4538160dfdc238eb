"""Exceptions raised while locating and loading model weights and tokenizers."""

from __future__ import annotations


class ModelLoadError(Exception):
    """Base class: the model could not be loaded; the message says which file and why."""


class UnsupportedModelError(ModelLoadError):
    """The file is readable but uses an architecture, tensor type or tokenizer we do not implement."""


class CorruptModelError(ModelLoadError):
    """The file is not a valid model file: wrong format, truncated, or internally inconsistent."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path (or the packaged default model) does not exist."""
