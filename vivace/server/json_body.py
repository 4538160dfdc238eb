"""Request bodies parsed as JSON with a nesting limit, and every string checked (text_validation.py).

Python's JSON parser recurses once per level: a body nested tens of thousands deep raises
RecursionError (a 500 if uncaught). No request of this API nests deeper than a few levels, so a
body is refused past MAX_DEPTH, by the parser's own limit or by the walk over the parsed value,
which never recurses. The same walk applies the text rule to every string and key.
"""

from __future__ import annotations

import json
from typing import Any

from vivace.server.text_validation import is_valid_text

MAX_DEPTH = 64


class InvalidJSONBody(ValueError):
    """A body that is not acceptable JSON; `param` names the top-level field at fault, if one is."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def load_json(raw: bytes) -> Any:
    """The body's JSON value; raises InvalidJSONBody if malformed, too deep, or holding invalid text."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InvalidJSONBody(f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidJSONBody(f"malformed JSON body: {e}") from None
    _check(data)
    return data


def _check(data: Any) -> None:
    """Depth and the text rule over the whole value, without recursion."""
    roots = list(data.items()) if isinstance(data, dict) else [(None, data)]
    for name, root in roots:
        if name is not None and not is_valid_text(name):
            raise InvalidJSONBody("a field name holds a lone UTF-16 surrogate: text must be valid Unicode")
        stack = [(root, 2 if name is not None else 1)]
        while stack:
            value, depth = stack.pop()
            if isinstance(value, str):
                if not is_valid_text(value):
                    where = f"{name}: " if name is not None else ""
                    raise InvalidJSONBody(f"{where}text must be valid Unicode (a lone UTF-16 surrogate)", name)
                continue
            if not isinstance(value, (dict, list)):
                continue
            if depth > MAX_DEPTH:
                raise InvalidJSONBody(f"the JSON body nests deeper than {MAX_DEPTH} levels", name)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and not is_valid_text(key):
                    raise InvalidJSONBody(f"{name}: a key holds a lone UTF-16 surrogate", name)
                stack.append((item, depth + 1))
