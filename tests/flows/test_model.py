"""Flow.build: dependencies from template references, and load-time errors that name the steps."""

from __future__ import annotations

import pytest

from vivace.flows.model import Flow, FlowError, FlowInput, Step


def build(*steps: Step, inputs: tuple[str, ...] = ("x",)) -> Flow:
    return Flow.build("f", list(inputs), list(steps))


def test_dependencies_come_from_template_references():
    flow = build(
        Step("a", "{{ x }}"),
        Step("b", "{% for i in a %}{{ i }}{% endfor %} {{ x | upper }}"),
        Step("c", "{{ item }} {{ index }}", system="About {{ b }}", for_each="a | items"),
        Step("d", "{% set local = 3 %}{{ local }} {{ b }}{{ c }}"),
    )
    assert {n: set(s.depends_on) for n, s in flow.steps.items()} == {
        "a": set(),
        "b": {"a"},
        "c": {"a", "b"},
        "d": {"b", "c"},
    }
    assert flow.order() == ["a", "b", "c", "d"]
    assert flow.dependents("a") == ["b", "c"]


def test_a_cycle_is_an_error_naming_its_steps():
    with pytest.raises(
        FlowError, match=r"cycle: (a -> c -> b -> a|c -> b -> a -> c|b -> a -> c -> b) \(each step uses"
    ):
        build(Step("a", "{{ c }}"), Step("b", "{{ a }}"), Step("c", "{{ b }}"))


def test_a_step_referencing_itself_is_a_cycle():
    with pytest.raises(FlowError, match="step 'a' references itself"):
        build(Step("a", "{{ a }}"))


def test_an_unknown_reference_names_the_step_and_the_name():
    with pytest.raises(FlowError, match=r"step 'b' references 'nope', which is neither an input \(x\) nor a step"):
        build(Step("a", "{{ x }}"), Step("b", "{{ nope }}"))


def test_item_outside_for_each_is_explained():
    with pytest.raises(FlowError, match="only in a for_each step"):
        build(Step("a", "{{ item }}"))


def test_for_each_expression_references_count():
    with pytest.raises(FlowError, match="step 'b' references 'missing'"):
        build(Step("a", "{{ x }}"), Step("b", "{{ item }}", for_each="missing | items"))
    with pytest.raises(FlowError, match="for_each 'a \\|' is not an expression"):
        build(Step("a", "{{ x }}"), Step("b", "{{ item }}", for_each="a |"))


def test_template_syntax_errors_name_step_and_line():
    with pytest.raises(FlowError, match=r"step 'a': prompt template has a syntax error on line 2"):
        build(Step("a", "fine\n{% for %}"))


@pytest.mark.parametrize(
    "steps, message",
    [
        ([Step("a", "1"), Step("a", "2")], "step 'a' is declared twice"),
        ([Step("x", "1")], "'x' is both an input and a step"),
        ([Step("bad-name", "1")], "must be an identifier"),
        ([Step("item", "1")], "'item' is reserved"),
        ([Step("a", "1", parser="yaml")], "unknown parser 'yaml'; use one of json, line, lines, list"),
        ([Step("a", "1", max_tokens=0)], "max_tokens must be a positive integer"),
        ([Step("a", "1", timeout=0)], "timeout must be positive"),
        ([], "has no steps"),
    ],
)
def test_invalid_steps(steps, message):
    with pytest.raises(FlowError, match=message):
        build(*steps)


def test_inputs_resolve_with_defaults_and_clear_errors():
    flow = Flow.build("f", [FlowInput("x", "the x"), FlowInput("y", default="why")], [Step("a", "{{ x }}{{ y }}")])
    assert flow.resolve_inputs({"x": "1"}) == {"x": "1", "y": "why"}
    with pytest.raises(FlowError, match=r"needs input 'x' \(the x\)"):
        flow.resolve_inputs({})
    with pytest.raises(FlowError, match="has no input 'z'; its inputs are x, y"):
        flow.resolve_inputs({"x": "1", "z": "2"})


def test_describe_lists_inputs_and_dependencies():
    flow = build(Step("a", "{{ x }}"), Step("b", "{{ a }}", provider="openai:gpt-4o-mini", parser="json"))
    described = flow.describe()
    assert described["inputs"] == [{"name": "x", "description": "", "default": None, "required": True}]
    assert described["steps"][1] == {
        "name": "b",
        "depends_on": ["a"],
        "for_each": None,
        "parser": "json",
        "provider": "openai:gpt-4o-mini",
    }
    assert described["steps"][0]["provider"] == "local:"
