"""The flow model: named steps whose jinja2 templates reference inputs and each other.

A step's dependencies are the names its templates (prompt, system, `for_each`) reference that are
steps of the flow; every other name must be a declared input. Both are checked, along with cycles,
when the flow is built, so a flow that loads can run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from vivace.flows.graph import CycleError, topological_order
from vivace.flows.parsers import PARSERS, as_items

ITEM_NAMES = frozenset({"item", "index"})  # what a for_each step's templates see for its current item
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_PROVIDER = "local:"


class FlowError(ValueError):
    """A flow that cannot be loaded or run as written; the message names the flow and steps."""


def normalize_provider(spec: str) -> str:
    """`local` and `local:` name the same provider (YAML needs quotes around the latter); others are trimmed."""
    spec = spec.strip()
    return DEFAULT_PROVIDER if spec == "local" else spec


def template_env() -> SandboxedEnvironment:
    """The jinja2 environment every flow template is compiled in (sandboxed; undefined names fail)."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["items"] = as_items
    env.globals["items"] = as_items
    return env


ENV = template_env()


@dataclass
class FlowInput:
    """A named input of a flow; without a default it is required."""

    name: str
    description: str = ""
    default: str | None = None

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass
class Step:
    """One generation: a prompt template, where it runs, how it samples and how its output is parsed.

    `provider` None means the flow's default. `parser` is None (the value is the text), "json",
    "line" (the first line), "lines" or "list". `default` is the value used when the parser cannot
    parse the text (without one, a parse failure fails the step). `schema` (with parser "json"): the
    JSON schema the output must match, a mapping or a template rendering to one; a provider that can
    constrain its output (`local:`) is made to, others are only parsed. `for_each` is a jinja2 expression giving a list; the step
    then runs once per item, its templates seeing `item` and `index`, and its value is the list of
    the items' values. `timeout` bounds each model call of the step, in seconds.
    """

    name: str
    prompt: str
    system: str | None = None
    provider: str | None = None
    parser: str | None = None
    schema: dict[str, Any] | str | None = None
    default: Any = None
    for_each: str | None = None
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    chat: bool = True  # False: the rendered prompt is sent as raw text, without the chat template
    depends_on: frozenset[str] = field(default=frozenset(), init=False)


@dataclass
class Flow:
    """A set of named steps over named inputs; build it with `Flow.build` so it is checked."""

    name: str
    inputs: dict[str, FlowInput]
    steps: dict[str, Step]
    provider: str = DEFAULT_PROVIDER
    description: str = ""

    @classmethod
    def build(
        cls,
        name: str,
        inputs: list[FlowInput | str],
        steps: list[Step],
        provider: str | None = None,
        description: str = "",
    ) -> Flow:
        """A checked flow: names valid and unique, references known, no cycles; fills `depends_on`."""
        if not isinstance(name, str) or not NAME_RE.match(name.replace("-", "_")):
            raise FlowError(f"flow name {name!r} must be letters, digits, '_' or '-'")
        specs = {}
        for raw in inputs:
            spec = FlowInput(raw) if isinstance(raw, str) else raw
            _check_name(name, "input", spec.name)
            if spec.name in specs:
                raise FlowError(f"flow {name!r}: input {spec.name!r} is declared twice")
            specs[spec.name] = spec
        by_name: dict[str, Step] = {}
        for step in steps:
            _check_name(name, "step", step.name)
            if step.name in by_name:
                raise FlowError(f"flow {name!r}: step {step.name!r} is declared twice")
            if step.name in specs:
                raise FlowError(f"flow {name!r}: {step.name!r} is both an input and a step")
            if step.parser is not None and step.parser not in PARSERS:
                raise FlowError(
                    f"flow {name!r}, step {step.name!r}: unknown parser {step.parser!r}; "
                    f"use one of {', '.join(sorted(PARSERS))}"
                )
            if step.schema is not None and step.parser != "json":
                raise FlowError(f"flow {name!r}, step {step.name!r}: a schema needs `parser: json`")
            if not isinstance(step.max_tokens, int) or step.max_tokens < 1:
                raise FlowError(f"flow {name!r}, step {step.name!r}: max_tokens must be a positive integer")
            if step.timeout is not None and step.timeout <= 0:
                raise FlowError(f"flow {name!r}, step {step.name!r}: timeout must be positive seconds")
            by_name[step.name] = step
        if not by_name:
            raise FlowError(f"flow {name!r} has no steps")
        for step in by_name.values():
            step.depends_on = _dependencies(name, step, specs, by_name)
        for step in by_name.values():
            step.provider = normalize_provider(step.provider) if step.provider else None
        flow = cls(name, specs, by_name, normalize_provider(provider or DEFAULT_PROVIDER), description)
        flow.order()  # raises on a cycle
        return flow

    def order(self) -> list[str]:
        """The steps in an order where each comes after its dependencies; a cycle is a FlowError."""
        try:
            return topological_order({name: step.depends_on for name, step in self.steps.items()})
        except CycleError as e:
            raise FlowError(f"flow {self.name!r} has a cycle: {e} (each step uses the next one's output)") from None

    def dependents(self, name: str) -> list[str]:
        """The steps that directly use `name`'s output."""
        return [s.name for s in self.steps.values() if name in s.depends_on]

    def resolve_inputs(self, given: dict[str, Any]) -> dict[str, Any]:
        """The inputs a run sees: `given` checked against the declared ones, defaults filled in."""
        unknown = sorted(set(given) - set(self.inputs))
        if unknown:
            raise FlowError(
                f"flow {self.name!r} has no input {', '.join(map(repr, unknown))}; "
                f"its inputs are {', '.join(self.inputs) or '(none)'}"
            )
        values = {}
        for spec in self.inputs.values():
            if spec.name in given:
                values[spec.name] = given[spec.name]
            elif spec.required:
                raise FlowError(
                    f"flow {self.name!r} needs input {spec.name!r}"
                    + (f" ({spec.description})" if spec.description else "")
                )
            else:
                values[spec.name] = spec.default
        return values

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: inputs, steps and what each waits for."""
        return {
            "name": self.name,
            "description": self.description,
            "provider": self.provider,
            "inputs": [
                {"name": i.name, "description": i.description, "default": i.default, "required": i.required}
                for i in self.inputs.values()
            ],
            "steps": [
                {
                    "name": s.name,
                    "depends_on": sorted(s.depends_on),
                    "for_each": s.for_each,
                    "parser": s.parser,
                    "provider": s.provider or self.provider,
                }
                for s in self.steps.values()
            ],
        }


def _check_name(flow: str, kind: str, name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise FlowError(f"flow {flow!r}: {kind} name {name!r} must be an identifier (letters, digits, '_')")
    if name in ITEM_NAMES or name in ENV.globals:
        raise FlowError(f"flow {flow!r}: {kind} name {name!r} is reserved")


def referenced_names(flow: str, step: str, what: str, source: str) -> set[str]:
    """The free variable names a template references; a syntax error is a FlowError naming the step."""
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise FlowError(
            f"flow {flow!r}, step {step!r}: {what} template has a syntax error on line {e.lineno}: {e.message}"
        ) from None
    return set(meta.find_undeclared_variables(ast)) - set(ENV.globals)


def _expression_names(flow: str, step: str, expression: str) -> set[str]:
    try:
        ENV.compile_expression(expression)
    except jinja2.TemplateSyntaxError as e:
        raise FlowError(
            f"flow {flow!r}, step {step!r}: for_each {expression!r} is not an expression: {e.message}"
        ) from None
    return set(meta.find_undeclared_variables(ENV.parse("{{ " + expression + " }}"))) - set(ENV.globals)


def _dependencies(flow: str, step: Step, inputs: dict[str, FlowInput], steps: dict[str, Step]) -> frozenset[str]:
    names = referenced_names(flow, step.name, "prompt", step.prompt)
    if step.system is not None:
        names |= referenced_names(flow, step.name, "system", step.system)
    if isinstance(step.schema, str):
        names |= referenced_names(flow, step.name, "schema", step.schema)
    if step.for_each is not None:
        names -= ITEM_NAMES
        names |= _expression_names(flow, step.name, step.for_each)
    if step.name in names:
        raise FlowError(f"flow {flow!r} has a cycle: step {step.name!r} references itself")
    unknown = sorted(n for n in names if n not in inputs and n not in steps)
    if unknown:
        hint = " (item and index exist only in a for_each step)" if set(unknown) & ITEM_NAMES else ""
        raise FlowError(
            f"flow {flow!r}, step {step.name!r} references {', '.join(map(repr, unknown))}, which is "
            f"neither an input ({', '.join(inputs) or 'none'}) nor a step "
            f"({', '.join(steps)}){hint}"
        )
    return frozenset(n for n in names if n in steps)
