"""Reading the JSON files of an HF model directory, with errors that name the file."""

from __future__ import annotations

import json
import os
from typing import Any

from vivace.engine.loaders.errors import CorruptModelError


def read_json_object(path: str) -> dict[str, Any] | None:
    """The JSON object in `path`; None when the file is absent; CorruptModelError when it is not an object."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptModelError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data
