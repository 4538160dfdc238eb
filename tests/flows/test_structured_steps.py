"""Flow steps with `parser: json` and a `schema:` are constrained on `local:`: the packaged recipe's
`ideas` is always three names and `pick` always one of them, over several inputs, on the packaged model."""

from __future__ import annotations

import copy

import pytest

from vivace.flows.events import StepFinished
from vivace.flows.executor import collect
from vivace.flows.loader import find_flow, loads_flow
from vivace.flows.model import Flow, FlowError

INPUTS = [
    {"on_hand": "chicken, rice, spinach", "prep_time": "30 minutes"},
    {"on_hand": "eggs, cheese", "prep_time": "10 minutes"},
    {"on_hand": "lentils, carrots, onion", "prep_time": "an hour"},
    {"on_hand": "salmon, potatoes", "prep_time": "45 minutes"},
]


def test_a_schema_needs_the_json_parser():
    with pytest.raises(FlowError, match="a schema needs `parser: json`"):
        loads_flow("name: f\nsteps:\n  a: {prompt: hi, parser: list, schema: {type: array}}\n")


def _ideas_and_pick() -> Flow:
    recipe = find_flow("recipe")
    steps = [copy.copy(recipe.steps[name]) for name in ("ideas", "pick")]
    return Flow.build("ideas_and_pick", list(recipe.inputs.values()), steps, recipe.provider)


@pytest.mark.slow
@pytest.mark.parametrize("inputs", INPUTS, ids=[i["on_hand"] for i in INPUTS])
async def test_recipe_ideas_and_pick_are_well_formed(pool, inputs):
    result = await collect(_ideas_and_pick(), inputs, pool)
    ideas, pick = result.steps["ideas"], result.steps["pick"]
    assert isinstance(ideas, StepFinished) and isinstance(pick, StepFinished)
    assert ideas.parse_error is None and pick.parse_error is None, (ideas.text, pick.text)
    assert ideas.finish_reason == "stop" and pick.finish_reason == "stop"
    assert isinstance(ideas.value, list) and len(ideas.value) == 3
    assert all(isinstance(i, str) and i for i in ideas.value)
    assert pick.value in ideas.value


@pytest.mark.slow
async def test_the_whole_recipe_runs_well_formed(pool):
    result = await collect(find_flow("recipe"), INPUTS[1], pool)
    assert all(isinstance(s, StepFinished) for s in result.steps.values()), result.steps
    assert result.steps["pick"].value in result.steps["ideas"].value
