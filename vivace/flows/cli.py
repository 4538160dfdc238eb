"""`vivace flow run FILE --input key=value`: run a flow in the terminal, a live panel per step."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from vivace.flows.events import FlowEvent, FlowFinished, StepDelta, StepFailed, StepFinished, StepStarted
from vivace.flows.model import Flow, FlowError, normalize_provider

flow_app = typer.Typer(
    name="flow",
    help="Run prompt flows: steps run as soon as their inputs are ready.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # as the main app's: help wraps, never cut
)

TAIL_LINES = 8  # lines of each step's text kept on screen


@dataclass
class _Pane:
    """What one step's panel shows."""

    state: str = "waiting"
    text: str = ""
    items: dict[int, str] = field(default_factory=dict)
    note: str = ""

    def body(self) -> Text:
        text = self.text if not self.items else "\n".join(f"[{i}] {t.strip()}" for i, t in sorted(self.items.items()))
        lines = text.splitlines()[-TAIL_LINES:]
        body = Text("\n".join(lines) or "…", style="dim" if self.state == "waiting" else "")
        if self.note:
            body.append("\n" + self.note, style="red" if self.state == "failed" else "green")
        return body


_STYLE = {"waiting": "grey50", "running": "yellow", "done": "green", "failed": "red"}


class LivePanels:
    """Turns flow events into one rich panel per step."""

    def __init__(self, flow: Flow) -> None:
        self.panes = {name: _Pane() for name in flow.steps}
        self.finished: FlowFinished | None = None

    def update(self, event: FlowEvent) -> None:
        """Apply one event to the panels."""
        if isinstance(event, FlowFinished):
            self.finished = event
            return
        pane = self.panes[event.step]  # type: ignore[attr-defined]
        index = getattr(event, "index", None)
        if isinstance(event, StepStarted) and index is None:
            pane.state = "running"
        elif isinstance(event, StepDelta):
            if index is None:
                pane.text += event.text
            else:
                pane.items[index] = pane.items.get(index, "") + event.text
        elif isinstance(event, StepFinished) and index is None:
            pane.state = "done"
            pane.note = f"{event.tokens} tokens in {event.duration:.2f}s"
            if event.parse_error:
                pane.note += f" (parse failed, used the default: {event.parse_error})"
        elif isinstance(event, StepFailed) and index is None:
            pane.state = "failed"
            pane.note = event.error

    def __rich__(self) -> Group:
        panels = [
            Panel(p.body(), title=f"{name} · {p.state}", title_align="left", border_style=_STYLE[p.state])
            for name, p in self.panes.items()
        ]
        if self.finished is not None:
            f = self.finished
            panels.append(
                Text(
                    f"wall {f.wall_time:.2f}s · critical path {f.critical_path_time:.2f}s "
                    f"({' -> '.join(f.critical_path)}) · steps one after another {f.step_time_sum:.2f}s"
                    + ("" if f.ok else f" · failed: {', '.join(f.failed)}"),
                    style="bold",
                )
            )
        return Group(*panels)


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings to a dict; a pair without '=' is a BadParameter."""
    inputs = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--input")
        inputs[key.strip()] = value
    return inputs


async def _run(flow: Flow, inputs: dict[str, str], as_json: bool, console: Console) -> FlowFinished:
    from contextlib import aclosing

    from vivace.flows.executor import run_flow
    from vivace.flows.pool import ProviderPool

    pool = ProviderPool()
    panels = LivePanels(flow)
    try:
        async with aclosing(run_flow(flow, inputs, pool)) as events:
            if as_json:
                async for event in events:
                    print(
                        json.dumps({"event": event.kind, **event.to_dict()}, ensure_ascii=False, default=str),
                        flush=True,
                    )
                    panels.update(event)
            else:
                with Live(panels, console=console, refresh_per_second=8, vertical_overflow="visible"):
                    async for event in events:
                        panels.update(event)
    finally:
        await pool.aclose()
    assert panels.finished is not None
    return panels.finished


@flow_app.command("run")
def run(
    file: Annotated[str, typer.Argument(help="A flow YAML file, or the name of a packaged example (recipe).")],
    input: Annotated[list[str] | None, typer.Option("--input", "-i", help="An input as key=value; repeat.")] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="Run the steps without their own provider on this one, e.g. local: or groq:MODEL."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as a JSON line instead of panels.")] = False,
) -> None:
    """Run a flow, drawing a live panel per step; exits 1 if a step failed."""
    from vivace.flows.loader import find_flow

    try:
        flow = find_flow(file)
        if provider:
            flow.provider = normalize_provider(provider)
        inputs = parse_inputs(input or [])
        flow.resolve_inputs(inputs)
    except FlowError as e:
        raise typer.BadParameter(str(e)) from None
    console = Console()
    try:
        finished = asyncio.run(_run(flow, inputs, as_json, console))
    except KeyboardInterrupt:
        console.print("[red]cancelled[/red]")
        raise typer.Exit(130) from None
    if not finished.ok:
        print(f"failed steps: {', '.join(finished.failed)}", file=sys.stderr)
        raise typer.Exit(1)


@flow_app.command("list")
def list_flows() -> None:
    """List the packaged example flows and their inputs."""
    from vivace.flows.loader import examples_dir, load_flows

    for flow in load_flows(examples_dir()).values():
        inputs = ", ".join(f"{i.name}" + ("" if i.required else f"={i.default!r}") for i in flow.inputs.values())
        typer.echo(f"{flow.name}: {flow.description} (inputs: {inputs})")
