"""Request fields -> StructuredOutputsParams, as the server, `vivace batch` lines and the local provider
take them: every spelling maps to the same constraint, and errors name the field as sent."""

from __future__ import annotations

import pytest

from vivace.batch_io import BatchError, BatchRequest, parse_line
from vivace.engine.config import InvalidParameterError
from vivace.engine.request_params import sampling_params_from_fields

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("fields", "kind", "value"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}}, "json", SCHEMA),
        ({"response_format": {"type": "json_object"}}, "json_object", True),
        ({"guided_json": SCHEMA}, "json", SCHEMA),
        ({"guided_json": '{"type": "object", "properties": {"a": {"type": "integer"}}}'}, "json", SCHEMA),
        ({"guided_regex": "[a-z]+"}, "regex", "[a-z]+"),
        ({"guided_grammar": 'start: "x"'}, "grammar", 'start: "x"'),
        ({"guided_choice": ["a", "b"]}, "choice", ["a", "b"]),
        ({"structured_outputs": {"regex": "[0-9]"}}, "regex", "[0-9]"),
    ],
)
def test_spellings(fields, kind, value):
    constraint = sampling_params_from_fields(fields).structured_outputs
    assert constraint.kind == kind and getattr(constraint, kind) == value
    assert constraint.field == next(iter(fields))


def test_text_or_none_is_unconstrained():
    assert sampling_params_from_fields({"response_format": {"type": "text"}}).structured_outputs is None
    assert sampling_params_from_fields({"guided_json": None}).structured_outputs is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_choice": []}, "guided_choice"),
        ({"structured_outputs": {"json": SCHEMA, "regex": "a"}}, "structured_outputs"),
        ({"structured_outputs": {"xml": "a"}}, "structured_outputs"),
        ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_errors_name_the_field(fields, param):
    with pytest.raises(InvalidParameterError) as e:
        sampling_params_from_fields(fields)
    assert e.value.param == param


def test_batch_lines_take_the_same_fields():
    line = parse_line(0, '{"prompt": "x", "response_format": {"type": "json_object"}, "max_tokens": 4}')
    assert isinstance(line, BatchRequest) and line.sampling_params.structured_outputs.kind == "json_object"
    bad = parse_line(1, '{"prompt": "x", "guided_choice": "a"}')
    assert isinstance(bad, BatchError) and "guided_choice" in bad.error
