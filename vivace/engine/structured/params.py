"""StructuredOutputsParams: the constraint a request's output must match, as vLLM names it.

Pure data (no grammar library imported): exactly one of a JSON schema, any JSON object, a regular
expression, a grammar (Lark or GBNF) or a list of choices. `field` is the request field it came from,
so an error compiling it names what the client sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vivace.engine.config import InvalidParameterError

_KINDS = ("json", "json_object", "regex", "grammar", "choice")


@dataclass(eq=False)
class StructuredOutputsParams:
    """Exactly one of: `json` (a JSON schema, dict or string), `json_object` (any JSON object),
    `regex`, `grammar` (Lark, or GBNF as llama.cpp writes it) or `choice` (one of these strings)."""

    json: dict[str, Any] | str | None = None
    json_object: bool | None = None
    regex: str | None = None
    grammar: str | None = None
    choice: list[str] | None = None
    field: str = field(default="structured_outputs", repr=False)  # the request field, for errors

    def __post_init__(self) -> None:
        given = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise InvalidParameterError(
                self.field, f"give exactly one of {', '.join(_KINDS)}; got {', '.join(given) or 'none'}"
            )
        if isinstance(self.json, str):
            try:
                self.json = json.loads(self.json)
            except ValueError as e:
                raise InvalidParameterError(self.field, f"the JSON schema is not valid JSON: {e}") from None
        if self.json is not None and not isinstance(self.json, dict):
            raise InvalidParameterError(self.field, f"a JSON schema must be an object, got {self.json!r}")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidParameterError(self.field, f"{name} must be a non-empty string, got {value!r}")
        if self.choice is not None and (
            not isinstance(self.choice, list) or not self.choice or not all(isinstance(c, str) for c in self.choice)
        ):
            raise InvalidParameterError(self.field, f"choice must be a non-empty list of strings, got {self.choice!r}")

    @property
    def kind(self) -> str:
        """Which constraint this is: json, json_object, regex, grammar or choice."""
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))

    @property
    def key(self) -> str:
        """A stable text of the constraint (compiled grammars are cached by it)."""
        value = getattr(self, self.kind)
        return self.kind + ":" + (value if isinstance(value, str) else json.dumps(value, sort_keys=True))
