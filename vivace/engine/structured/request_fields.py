"""Request fields that ask for structured outputs -> StructuredOutputsParams, as OpenAI and vLLM spell them.

- `response_format` (OpenAI): `{"type": "text"}` (none), `{"type": "json_object"}`, or
  `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
- vLLM's `guided_json` (schema object or string), `guided_regex`, `guided_grammar` (Lark or GBNF),
  `guided_choice` (list of strings), and `structured_outputs` (`{"json" | "regex" | "grammar" |
  "choice" | "json_object": ...}`).

At most one may be given; every error is an InvalidParameterError naming the field as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vivace.engine.config import InvalidParameterError
from vivace.engine.structured.params import StructuredOutputsParams

_GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_grammar": "grammar", "guided_choice": "choice"}
STRUCTURED_FIELDS: frozenset[str] = frozenset({"response_format", "structured_outputs", *_GUIDED})


def structured_from_fields(fields: Mapping[str, Any]) -> StructuredOutputsParams | None:
    """The constraint the request's fields ask for, or None; None-valued fields count as absent."""
    given = [name for name in sorted(STRUCTURED_FIELDS) if fields.get(name) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidParameterError(given[1], f"give one way of constraining the output, got {' and '.join(given)}")
    name = given[0]
    value = fields[name]
    if name == "response_format":
        return _response_format(value)
    if name == "structured_outputs":
        if isinstance(value, StructuredOutputsParams):
            return value
        if not isinstance(value, Mapping):
            raise InvalidParameterError(name, f"must be an object such as {{'json': schema}}, got {value!r}")
        unknown = sorted(set(value) - {"json", "regex", "grammar", "choice", "json_object"})
        if unknown:
            raise InvalidParameterError(
                name, f"unknown key {unknown[0]!r}; known: json, regex, grammar, choice, json_object"
            )
        return StructuredOutputsParams(**value, field=name)
    return StructuredOutputsParams(**{_GUIDED[name]: value}, field=name)


def _response_format(value: Any) -> StructuredOutputsParams | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise InvalidParameterError("response_format", f"must be an object with a 'type', got {value!r}")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True, field="response_format")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidParameterError("response_format", "type json_schema needs 'json_schema': {name, schema}")
        schema = spec.get("schema", {"type": "object"})  # OpenAI: no schema = any object
        return StructuredOutputsParams(json=schema, field="response_format")
    raise InvalidParameterError("response_format", f"type must be 'text', 'json_object' or 'json_schema', got {kind!r}")
