"""Classification templates are filled literally: no formatting, no attribute access, bounded size."""

from __future__ import annotations

import pytest

from vivace.engine.classify_prompt import MAX_LABELS, MAX_TEMPLATE_CHARS, check_labels, check_template, fill
from vivace.engine.config import InvalidParameterError


def test_placeholders_are_replaced_literally():
    assert fill("T: {text} L: {labels}", {"text": "hi", "labels": "a, b"}) == "T: hi L: a, b"


def test_format_specs_and_attribute_lookups_stay_as_written():
    template = "{text:>1000000000} {text.__class__} {labels[0]} {0} { {text"
    assert fill(template, {"text": "x", "labels": "a"}) == template


def test_a_value_is_never_expanded_again():
    assert fill("{text} {labels}", {"text": "{labels}", "labels": "L"}) == "{labels} L"


def test_unknown_names_are_left_alone():
    assert fill("{question} {text}", {"text": "t"}) == "{question} t"


def test_template_size_is_bounded():
    check_template("x" * MAX_TEMPLATE_CHARS)
    with pytest.raises(InvalidParameterError) as info:
        check_template("x" * (MAX_TEMPLATE_CHARS + 1))
    assert info.value.param == "template"


@pytest.mark.parametrize("labels", [[], ["a", "a"], ["a", ""], [str(i) for i in range(MAX_LABELS + 1)], ["x" * 1000]])
def test_bad_label_lists_name_the_field_they_came_in(labels):
    with pytest.raises(InvalidParameterError) as info:
        check_labels(labels, "validResponses")
    assert info.value.param == "validResponses"


def test_label_list_at_its_cap_is_accepted():
    check_labels([str(i) for i in range(MAX_LABELS)])
