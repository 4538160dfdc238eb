"""Output parsers for flow steps: model text -> a value later steps can use.

Small models wrap JSON in prose and code fences, so `json` looks for a fenced block first, then for
the first position where a JSON object or array decodes, ignoring whatever surrounds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_MARKER = re.compile(r"^\s*(?:[-*\u2022+]|\(?\d{1,3}[.)]|#+)\s+")
_DECODER = json.JSONDecoder()


class ParseError(ValueError):
    """A step's output could not be parsed the way its `parser` asks."""


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def parse_json(text: str) -> Any:
    """`text` if it is all one JSON value (a constrained step's output); else the first JSON object or
    array in it: inside a ``` fence if there is one, else anywhere."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for match in re.finditer(r"[\[{]", candidate):
            try:
                value, _ = _DECODER.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
            return value
        stripped = candidate.strip()
        if candidate is not text and stripped:
            try:  # a fenced scalar ("42", "\"name\"") is still JSON
                return json.loads(stripped)
            except json.JSONDecodeError:
                pass
    raise ParseError(f"no JSON object or array in the output {_snippet(text)}")


def parse_lines(text: str) -> list[str]:
    """The non-empty lines of `text`, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_line(text: str) -> str:
    """The first non-empty line of `text`, without a bullet, numbering or surrounding quotes/asterisks."""
    for line in parse_lines(text):
        line = _MARKER.sub("", line).strip().strip("*\"'` ").strip()
        if line and not line.startswith("```"):
            return line
    raise ParseError(f"no text line in the output {_snippet(text)}")


def parse_list(text: str) -> list[Any]:
    """A list from `text`: its JSON array if it has one, else its lines without bullets or numbering.

    A JSON object holding a list (`{"ideas": [...]}`) gives that list; any other JSON object is a
    one-item list.
    """
    try:
        value = parse_json(text)
    except ParseError:
        value = None
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        return lists[0] if lists else [value]
    items = [_MARKER.sub("", line).strip() for line in parse_lines(text)]
    items = [i for i in items if i and not i.startswith("```")]
    if not items:
        raise ParseError(f"no list items in the output {_snippet(text)}")
    return items


def as_items(value: Any) -> list[Any]:
    """A template helper: a list as is; a string split on newlines (or commas); None as []."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        parts = value.splitlines() if "\n" in value.strip() else value.split(",")
        return [p.strip() for p in parts if p.strip()]
    if isinstance(value, dict):
        return list(value.values())
    return [value]


PARSERS: dict[str, Callable[[str], Any]] = {
    "json": parse_json,
    "line": parse_line,
    "lines": parse_lines,
    "list": parse_list,
}


def parse(parser: str | None, text: str) -> Any:
    """`text` through the named parser; None returns the text itself."""
    if parser is None:
        return text
    return PARSERS[parser](text)
