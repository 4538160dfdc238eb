"""Flows from YAML files, or built in Python with FlowBuilder; both end in `Flow.build`.

YAML shape (steps in the order written; `defaults` apply to every step unless it sets its own):

    name: recipe
    provider: local:            # the default for steps without one
    inputs:
      ingredients: what you have on hand     # a description, or {description:, default:}
    defaults: {max_tokens: 128, temperature: 0.7, seed: 1}
    steps:
      ideas: {prompt: "Three recipes with {{ ingredients }}, as a JSON list", parser: list}
      pick:  {prompt: "Pick one of {{ ideas }}"}
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vivace.flows.model import Flow, FlowError, FlowInput, Step

STEP_FIELDS = {f.name: f for f in dataclasses.fields(Step) if f.init and f.name != "name"}
_TOP_KEYS = {"name", "description", "provider", "inputs", "defaults", "steps"}
_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "system": (str,),
    "provider": (str,),
    "parser": (str,),
    "schema": (dict, str),
    "for_each": (str,),
    "max_tokens": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_k": (int,),
    "seed": (int,),
    "stop": (list,),
    "timeout": _NUMBER,
    "chat": (bool,),
}


def step_from_options(flow: str, name: str, options: dict[str, Any]) -> Step:
    """A Step from a name and its options, with unknown options and wrong types named in the error."""
    if not isinstance(options, dict):
        raise FlowError(f"flow {flow!r}, step {name!r}: expected a mapping of options, got {options!r}")
    unknown = sorted(set(options) - set(STEP_FIELDS))
    if unknown:
        raise FlowError(
            f"flow {flow!r}, step {name!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(STEP_FIELDS)}"
        )
    if "prompt" not in options:
        raise FlowError(f"flow {flow!r}, step {name!r} has no prompt")
    for key, value in options.items():
        types = _TYPES.get(key)
        if (
            types
            and value is not None
            and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types))
        ):
            raise FlowError(
                f"flow {flow!r}, step {name!r}: {key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"
            )
    if options.get("stop") is not None and not all(isinstance(s, str) for s in options["stop"]):
        raise FlowError(f"flow {flow!r}, step {name!r}: stop must be a list of strings")
    return Step(name=name, **options)


def flow_from_dict(data: Any, default_name: str | None = None) -> Flow:
    """A checked Flow from parsed YAML/JSON data."""
    if not isinstance(data, dict):
        raise FlowError(f"a flow must be a mapping with 'steps', got {type(data).__name__}")
    name = data.get("name", default_name)
    if name is None:
        raise FlowError("the flow has no 'name'")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise FlowError(f"flow {name!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    inputs = _inputs(name, data.get("inputs") or {})
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise FlowError(f"flow {name!r}: 'defaults' must be a mapping of step options")
    steps = data.get("steps")
    if not isinstance(steps, dict) or not steps:
        raise FlowError(f"flow {name!r}: 'steps' must be a mapping of step name -> options")
    built = []
    for step_name, options in steps.items():
        if isinstance(options, str):
            options = {"prompt": options}
        merged = {**defaults, **options} if isinstance(options, dict) else options
        built.append(step_from_options(name, step_name, merged))
    provider = data.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise FlowError(f"flow {name!r}: provider must be a string like 'local:' or 'openai:gpt-4o-mini'")
    return Flow.build(name, inputs, built, provider, str(data.get("description") or ""))


def _inputs(flow: str, raw: Any) -> list[FlowInput]:
    if isinstance(raw, list):
        raw = {entry: {} for entry in raw} if all(isinstance(e, str) for e in raw) else None
    if not isinstance(raw, dict):
        raise FlowError(f"flow {flow!r}: 'inputs' must map input names to a description or {{description:, default:}}")
    out = []
    for name, spec in raw.items():
        if spec is None or isinstance(spec, str):
            spec = {"description": spec or ""}
        if not isinstance(spec, dict) or set(spec) - {"description", "default"}:
            raise FlowError(f"flow {flow!r}: input {name!r} takes only description and default")
        default = spec.get("default")
        out.append(FlowInput(name, str(spec.get("description") or ""), None if default is None else str(default)))
    return out


def loads_flow(text: str, source: str = "<string>", default_name: str | None = None) -> Flow:
    """A Flow from YAML text; `source` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise FlowError(f"{source}: not valid YAML{where}: {problem}") from None
    try:
        return flow_from_dict(data, default_name)
    except FlowError as e:
        raise FlowError(f"{source}: {e}") from None


def load_flow(path: str | Path) -> Flow:
    """A Flow from a YAML file (its name defaults to the file name without extension)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FlowError(f"cannot read flow file {str(path)!r}: {e.strerror}") from None
    return loads_flow(text, str(path), path.stem)


def load_flows(directory: str | Path) -> dict[str, Flow]:
    """Every *.yaml / *.yml flow in a folder, by name; two flows with one name is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FlowError(f"flows folder {str(directory)!r} does not exist")
    flows: dict[str, Flow] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        flow = load_flow(path)
        if flow.name in flows:
            raise FlowError(f"two flows in {str(directory)!r} are named {flow.name!r}")
        flows[flow.name] = flow
    return flows


def examples_dir() -> Path:
    """The folder of example flows that ships inside the package."""
    return Path(str(resources.files("vivace.flows") / "examples"))


def find_flow(name_or_path: str) -> Flow:
    """A flow from a YAML path, or a packaged example by name (`recipe`)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return load_flow(path)
    example = examples_dir() / f"{name_or_path}.yaml"
    if example.exists():
        return load_flow(example)
    known = ", ".join(sorted(p.stem for p in examples_dir().glob("*.yaml")))
    raise FlowError(f"no flow file {name_or_path!r} and no packaged example of that name (examples: {known})")


class FlowBuilder:
    """Build a flow in Python: `FlowBuilder("f").input("x").step("a", "{{ x }}").build()`."""

    def __init__(self, name: str, provider: str | None = None, description: str = "", **defaults: Any) -> None:
        self.name = name
        self.provider = provider
        self.description = description
        self.defaults = defaults
        self._inputs: list[FlowInput] = []
        self._steps: list[Step] = []

    def input(self, name: str, description: str = "", default: str | None = None) -> FlowBuilder:
        """Declare an input (required unless it has a default)."""
        self._inputs.append(FlowInput(name, description, default))
        return self

    def step(self, name: str, prompt: str, **options: Any) -> FlowBuilder:
        """Add a step; options are Step's fields (parser, for_each, provider, max_tokens, seed, ...)."""
        self._steps.append(step_from_options(self.name, name, {**self.defaults, **options, "prompt": prompt}))
        return self

    def build(self) -> Flow:
        """The checked Flow (FlowError on cycles and unknown references)."""
        return Flow.build(self.name, self._inputs, self._steps, self.provider, self.description)
