"""Loading flows from YAML (and its errors) and building the same flows in Python."""

from __future__ import annotations

import pytest

from tests.flows.conftest import FANOUT_YAML
from vivace.flows.loader import FlowBuilder, examples_dir, find_flow, load_flow, load_flows, loads_flow
from vivace.flows.model import FlowError


def test_yaml_flow_loads_with_defaults_and_dependencies():
    flow = loads_flow(FANOUT_YAML)
    assert flow.name == "fanout" and flow.provider == "local:"
    assert list(flow.steps) == ["a", "b", "c", "each", "d"]
    assert flow.steps["d"].depends_on == {"b", "c"}
    assert flow.steps["each"].depends_on == {"a"}
    assert flow.steps["b"].max_tokens == 6 and flow.steps["b"].seed == 3
    assert flow.inputs["topic"].default == "tea"


def test_builder_makes_the_same_flow_as_yaml():
    built = (
        FlowBuilder("fanout", max_tokens=6, temperature=0.8, seed=3)
        .input("topic", default="tea")
        .input("things", default="apples, pears, plums")
        .step("a", "Say one word about {{ topic }}.")
        .step("b", "Expand on: {{ a }}")
        .step("c", "Contradict: {{ a }}")
        .step("each", "Describe {{ item }} (number {{ index }}) with {{ a }}.", for_each="things | items")
        .step("d", "Summarise {{ b }} and {{ c }}.")
        .build()
    )
    assert built == loads_flow(FANOUT_YAML)


def test_builder_checks_like_the_loader():
    with pytest.raises(FlowError, match="cycle"):
        FlowBuilder("f").step("a", "{{ b }}").step("b", "{{ a }}").build()
    with pytest.raises(FlowError, match="unknown option\\(s\\) temprature"):
        FlowBuilder("f").step("a", "hi", temprature=0.5)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsteps:\n  a: {prompt: 'unclosed\n")
    with pytest.raises(FlowError, match=r"broken\.yaml: not valid YAML at line \d+"):
        load_flow(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b", "a flow must be a mapping with 'steps'"),
        ("name: f\nsteps: {}", "'steps' must be a mapping"),
        ("name: f\nsteeps: {}", "unknown key\\(s\\) steeps"),
        ("name: f\nsteps:\n  a: {prompt: hi, tokens: 3}", "step 'a': unknown option\\(s\\) tokens"),
        ("name: f\nsteps:\n  a: {max_tokens: 3}", "step 'a' has no prompt"),
        ("name: f\nsteps:\n  a: {prompt: hi, max_tokens: many}", "max_tokens must be int, got 'many'"),
        ("name: f\nsteps:\n  a: {prompt: hi, chat: 1}", "chat must be bool"),
        ("name: f\nsteps:\n  a: {prompt: hi, stop: [1]}", "stop must be a list of strings"),
        ("name: f\ninputs: {x: [1]}\nsteps:\n  a: hi", "input 'x' takes only description and default"),
        ("name: f\nsteps:\n  a: '{{ b }}'\n  b: '{{ a }}'", "<string>: flow 'f' has a cycle"),
        ("name: f\nsteps:\n  a: '{{ ghost }}'", "step 'a' references 'ghost'"),
    ],
)
def test_invalid_flows(text, message):
    with pytest.raises(FlowError, match=message):
        loads_flow(text)


def test_string_step_and_list_inputs():
    flow = loads_flow("name: f\ninputs: [x, y]\nprovider: openai:gpt-4o-mini\nsteps:\n  a: '{{ x }} {{ y }}'")
    assert flow.steps["a"].prompt == "{{ x }} {{ y }}"
    assert [i.required for i in flow.inputs.values()] == [True, True]
    assert flow.provider == "openai:gpt-4o-mini"


def test_load_flows_reads_a_folder_and_rejects_duplicate_names(tmp_path):
    (tmp_path / "one.yaml").write_text("steps:\n  a: hi")
    (tmp_path / "two.yml").write_text("name: two\nsteps:\n  a: hi")
    assert sorted(load_flows(tmp_path)) == ["one", "two"]
    (tmp_path / "three.yaml").write_text("name: one\nsteps:\n  a: hi")
    with pytest.raises(FlowError, match="two flows in .* are named 'one'"):
        load_flows(tmp_path)
    with pytest.raises(FlowError, match="does not exist"):
        load_flows(tmp_path / "missing")


def test_packaged_recipe_example():
    flow = find_flow("recipe")
    assert (examples_dir() / "recipe.yaml").is_file()
    assert list(flow.steps) == ["ideas", "pick", "ingredients", "intro", "nutrition", "sides", "steps"]
    assert {n: set(s.depends_on) for n, s in flow.steps.items()} == {
        "ideas": set(),
        "pick": {"ideas"},
        "ingredients": {"pick"},
        "intro": {"pick"},
        "nutrition": {"pick"},
        "sides": {"pick"},
        "steps": {"pick", "ingredients"},
    }
    assert flow.steps["nutrition"].for_each is not None
    assert flow.provider == "local:"
    with pytest.raises(FlowError, match="no packaged example of that name \\(examples: recipe\\)"):
        find_flow("nope")
    with pytest.raises(FlowError, match="cannot read flow file"):
        find_flow("missing.yaml")
