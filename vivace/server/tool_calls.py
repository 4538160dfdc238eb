"""Tool calls: `tools` and `tool_choice` -> the prompt and a grammar; the model's output -> `tool_calls`.

The model sees its tools through its chat template's `tools` variable, as transformers renders them.
A template that has no `tools` variable (the packaged model's) gets them the way Hermes/Qwen templates
write them: a system-prompt section listing the functions, and calls written as

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

which is also the format parsed back out of the output (ToolCallStream, streamed or not).
`tool_choice` "required" or a named function constrains the output with a grammar of exactly such
calls (the function's `parameters` as their JSON schema; an object schema that does not say whether it
allows more properties gets none), so even a small model returns a valid call;
"auto" (the default with tools) leaves the model free and parses whatever calls it writes; "none"
leaves the tools out of the prompt. Assistant `tool_calls` and `tool` messages in the history are
rendered: natively where the template knows `tool_calls`, else as the same `<tool_call>` text.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.structured.grammar import JSON_OPTIONS
from vivace.engine.structured.params import StructuredOutputsParams

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

_SYSTEM_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


class FunctionDefinition(BaseModel):
    """A callable function: its name, what it does, and its arguments' JSON schema."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """One entry of `tools`."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: FunctionDefinition


class _FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"] = "function"
    function: _FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@dataclass
class ToolPlan:
    """What a request's tool fields mean for its prompt, its constraint and its output."""

    tools: list[Tool] = field(default_factory=list)  # rendered into the prompt
    constraint: StructuredOutputsParams | None = None  # the grammar of the calls, when they are forced
    parse: bool = False  # look for calls in the output


def plan_tools(tools: list[Tool] | None, tool_choice: ToolChoice | None, parallel_tool_calls: bool) -> ToolPlan:
    """Resolve `tools` / `tool_choice` / `parallel_tool_calls`; errors name the field."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise InvalidParameterError("tool_choice", "needs `tools`")
        return ToolPlan()
    choice = tool_choice or "auto"
    if choice == "none":
        return ToolPlan()
    if choice == "auto":
        return ToolPlan(tools, None, parse=True)
    if isinstance(choice, NamedToolChoice):
        chosen = [t for t in tools if t.function.name == choice.function.name]
        if not chosen:
            names = ", ".join(t.function.name for t in tools)
            raise InvalidParameterError("tool_choice", f"function {choice.function.name!r} is not in tools ({names})")
        return ToolPlan(tools, _calls_grammar(chosen, parallel=False), parse=True)
    return ToolPlan(tools, _calls_grammar(tools, parallel_tool_calls), parse=True)


def constrained(params: SamplingParams, constraint: StructuredOutputsParams) -> SamplingParams:
    """`params` with the tool calls' grammar; a request that already constrains its output cannot have both."""
    if params.structured_outputs is not None:
        raise InvalidParameterError(
            "tool_choice", f"cannot force a tool call and also constrain the output ({params.structured_outputs.field})"
        )
    return dataclasses.replace(params, structured_outputs=constraint)


def _calls_grammar(tools: list[Tool], parallel: bool) -> StructuredOutputsParams:
    """A Lark grammar: one `<tool_call>` block (or several) whose JSON is a call of one of `tools`."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                "arguments": _closed(t.function.parameters or {"type": "object"}),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = {**schema, "x-guidance": JSON_OPTIONS}  # llguidance's options for an inline %json schema
    start = 'call ("\\n" call)*' if parallel else "call"
    grammar = f'start: {start}\ncall: "{CALL_OPEN}\\n" %json {json.dumps(schema)} "\\n{CALL_CLOSE}"\n'
    return StructuredOutputsParams(grammar=grammar, field="tool_choice")


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema that leaves additionalProperties open gets none: a forced call has just the declared ones."""
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        return {**schema, "additionalProperties": False}
    return schema


def template_messages(messages: list[dict[str, Any]], plan: ToolPlan, template: str | None) -> tuple[list, dict]:
    """Messages and extra template variables for the chat template, tools and tool-call history included."""
    native_tools = template is not None and "tools" in template
    native_calls = template is not None and "tool_calls" in template
    out = []
    for message in messages:
        message = dict(message)
        calls = message.get("tool_calls")
        if calls:
            if native_calls:
                message["tool_calls"] = [_with_parsed_arguments(c) for c in calls]
            else:
                message.pop("tool_calls")
                text = "\n".join(_call_text(c) for c in calls)
                message["content"] = f"{message.get('content') or ''}{text}" if message.get("content") else text
        if message.get("content") is None:
            message["content"] = ""
        out.append(message)
    if not plan.tools:
        return out, {}
    specs = [t.model_dump(exclude_none=True) for t in plan.tools]
    if native_tools:
        return out, {"tools": specs}
    listing = _SYSTEM_TOOLS.format(tools="\n".join(json.dumps(s, ensure_ascii=False) for s in specs))
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{listing}"}
    else:
        out.insert(0, {"role": "system", "content": listing})
    return out, {}


def _with_parsed_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """A history call with its `arguments` JSON string parsed (templates expect a mapping, as in transformers)."""
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except ValueError:
            pass
    return {**call, "function": function}


def _call_text(call: dict[str, Any]) -> str:
    function = _with_parsed_arguments(call)["function"]
    body = {"name": function.get("name"), "arguments": function.get("arguments", {})}
    return f"{CALL_OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{CALL_CLOSE}"


def _tool_call(body: str, index: int) -> dict[str, Any] | None:
    """The OpenAI tool call of one `<tool_call>` block's JSON, or None if it is not a call."""
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    return {
        "index": index,
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


class ToolCallStream:
    """Splits a choice's text, as it streams, into content and tool calls (OpenAI delta dicts).

    Text that might be the start of `<tool_call>` is held back until it is known not to be; a call is
    sent as one delta once its block closes. Whitespace before a call, and after the last one, is not
    content.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self._held = ""  # whitespace-only content, sent only if more content follows
        self.calls: list[dict[str, Any]] = []

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Deltas (`{"content": ...}` or `{"tool_calls": [...]}`) that `text` completes."""
        self._buffer += text
        deltas: list[dict[str, Any]] = []
        while self._buffer:
            if self._in_call:
                end = self._buffer.find(CALL_CLOSE)
                if end < 0:
                    break
                body, self._buffer = self._buffer[:end], self._buffer[end + len(CALL_CLOSE) :]
                self._in_call = False
                call = _tool_call(body, len(self.calls))
                if call is None:
                    self._content(deltas, CALL_OPEN + body + CALL_CLOSE)
                else:
                    self._held = ""
                    self.calls.append(call)
                    deltas.append({"tool_calls": [call]})
                continue
            start = self._buffer.find(CALL_OPEN)
            if start >= 0:
                self._content(deltas, self._buffer[:start])
                self._buffer = self._buffer[start + len(CALL_OPEN) :]
                self._in_call = True
                continue
            keep = _partial_suffix(self._buffer, CALL_OPEN)
            self._content(deltas, self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return deltas

    def finish(self) -> list[dict[str, Any]]:
        """Deltas for whatever is left when the choice ends (an unclosed call stays content)."""
        rest = (CALL_OPEN if self._in_call else "") + self._buffer
        self._buffer, self._in_call = "", False
        deltas: list[dict[str, Any]] = []
        self._content(deltas, rest)
        if self._held and not self.calls:
            deltas.append({"content": self._held})
        self._held = ""
        return deltas

    def _content(self, deltas: list[dict[str, Any]], text: str) -> None:
        body = text.rstrip()
        if not body:
            self._held += text
            return
        deltas.append({"content": self._held + body})
        self._held = text[len(body) :]  # trailing whitespace waits: it is not content if a call follows


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """A finished choice's content (None when it is only calls) and its tool calls."""
    stream = ToolCallStream()
    deltas = stream.feed(text) + stream.finish()
    content = "".join(d["content"] for d in deltas if "content" in d)
    calls = [{key: value for key, value in call.items() if key != "index"} for call in stream.calls]
    return (content or None) if calls else content, calls
