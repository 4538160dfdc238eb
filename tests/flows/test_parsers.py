"""Parsers: JSON inside fences and chatter, lines, lists with bullets, first line, template items."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vivace.flows.parsers import ParseError, as_items, parse, parse_json, parse_line, parse_lines, parse_list


@pytest.mark.parametrize(
    "text, value",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! Here you go:\n```json\n["x", "y"]\n```\nEnjoy!', ["x", "y"]),
        ('```\n{"k": [1, 2]}\n```', {"k": [1, 2]}),
        ('Here are ideas: ["one", "two"] -- hope that helps', ["one", "two"]),
        ('[broken, then {"ok": true} later', {"ok": True}),
        ("```json\n42\n```", 42),
    ],
)
def test_json_finds_the_value(text, value):
    assert parse_json(text) == value


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2", "```json\nnot json\n```"])
def test_json_without_a_value_is_a_parse_error(text):
    with pytest.raises(ParseError, match="no JSON object or array"):
        parse_json(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ).filter(lambda v: isinstance(v, (list, dict))),
    st.sampled_from(["", "Sure: ", "ok\n```json\n"]),
    st.sampled_from(["", " thanks!", "\n```\nbye"]),
)
def test_json_round_trips_through_chatter(value, before, after):
    assert parse_json(before + json.dumps(value) + after) == value


def test_lines_and_line():
    assert parse_lines("  a \n\n b\n") == ["a", "b"]
    assert parse_line('\n\n1. **"Lemon Chicken"** \nmore') == "Lemon Chicken"
    with pytest.raises(ParseError, match="no text line"):
        parse_line("  \n ")


@pytest.mark.parametrize(
    "text, items",
    [
        ('["a", "b"]', ["a", "b"]),
        ('{"ideas": ["a", "b"], "n": 2}', ["a", "b"]),
        ('{"name": "a"}', [{"name": "a"}]),
        ("1. Soup\n2) Stew\n- Salad\n* Pie\n\u2022 Tart", ["Soup", "Stew", "Salad", "Pie", "Tart"]),
        ("```\nplain\n```", ["plain"]),
    ],
)
def test_list(text, items):
    assert parse_list(text) == items


def test_empty_list_is_a_parse_error():
    with pytest.raises(ParseError, match="no list items"):
        parse_list("  ")


def test_parse_dispatch():
    assert parse(None, "raw") == "raw"
    assert parse("json", "[1]") == [1]


@pytest.mark.parametrize(
    "value, items",
    [
        (None, []),
        (["a"], ["a"]),
        (("a", "b"), ["a", "b"]),
        ("a, b ,,c", ["a", "b", "c"]),
        ("one, two\nthree", ["one, two", "three"]),
        ({"k": 1}, [1]),
        (5, [5]),
    ],
)
def test_as_items(value, items):
    assert as_items(value) == items
