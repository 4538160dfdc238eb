"""`vivace flow run|list`: inputs, JSON event lines, live panels and exit codes, on the packaged model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vivace import cli
from vivace.flows.cli import LivePanels, parse_inputs
from vivace.flows.events import FlowFinished, StepDelta, StepFailed, StepFinished, StepStarted
from vivace.flows.loader import loads_flow

runner = CliRunner()

SMALL = """
name: small
inputs: {word: {default: sun}}
defaults: {max_tokens: 4, seed: 5, temperature: 0.5}
steps:
  first: "Say {{ word }}."
  second: "Repeat {{ first }}."
"""


def test_parse_inputs():
    assert parse_inputs(["a=1", "b = x=y", "c="]) == {"a": "1", "b": " x=y", "c": ""}
    with pytest.raises(Exception, match="is not key=value"):
        parse_inputs(["novalue"])


def test_live_panels_follow_the_events():
    flow = loads_flow(SMALL)
    panels = LivePanels(flow)
    for event in [
        StepStarted("first"),
        StepDelta("first", "Sun\nshine"),
        StepFinished("first", "Sun\nshine", "Sun\nshine", tokens=2, started_at=0, finished_at=0.5),
        StepFailed("second", "step 'second' timed out after 1s", "timeout"),
    ]:
        panels.update(event)
    assert panels.panes["first"].state == "done" and panels.panes["first"].text == "Sun\nshine"
    assert "2 tokens in 0.50s" in panels.panes["first"].note
    assert panels.panes["second"].state == "failed" and "timed out" in panels.panes["second"].note
    panels.update(FlowFinished("small", False, 1.0, 0.5, 0.5, ["first"], ["second"]))
    assert panels.finished is not None


def test_list_shows_the_packaged_recipe():
    result = runner.invoke(cli.app, ["flow", "list"])
    assert result.exit_code == 0 and result.output.startswith("recipe: ")
    assert "on_hand=" in result.output


def test_bad_input_and_missing_file_are_usage_errors(tmp_path):
    result = runner.invoke(cli.app, ["flow", "run", "recipe", "--input", "colour=red"])
    assert result.exit_code == 2 and "has no input 'colour'" in result.output
    result = runner.invoke(cli.app, ["flow", "run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "cannot read flow file" in result.output


@pytest.mark.slow
def test_run_prints_events_as_json_lines(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    result = runner.invoke(cli.app, ["flow", "run", str(path), "--input", "word=moon", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "step_started" and kinds[-1] == "flow_finished"
    finished = {e["step"]: e for e in events if e["event"] == "step_finished"}
    assert set(finished) == {"first", "second"} and all(0 < e["tokens"] <= 4 for e in finished.values())
    assert (
        kinds.index("step_finished")
        < [i for i, e in enumerate(events) if e["event"] == "step_started" and e["step"] == "second"][0]
    )


@pytest.mark.slow
def test_run_draws_panels_and_exits_1_when_a_step_fails(tmp_path):
    path = tmp_path / "failing.yaml"
    path.write_text(SMALL + '  third: "{{ word[9] }}"\n')
    result = runner.invoke(cli.app, ["flow", "run", str(path), "--provider", "local"])
    assert result.exit_code == 1
    assert "first · done" in result.output and "third · failed" in result.output
    assert "critical path" in result.output and "failed steps: third" in result.output
