"""ToolCallStream and parse_tool_calls: any split of a text into stream pieces gives the same content and
calls as the whole text at once; tool-call history and tools render through a template without tools."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from vivace.engine.chat_template import render_chat_template
from vivace.server.tool_calls import Tool, ToolCallStream, ToolPlan, parse_tool_calls, template_messages

TEXT = 'Let me check.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_whole_text():
    content, calls = parse_tool_calls(TEXT)
    assert content == "Let me check."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("f", {"x": 1}),
        ("g", {}),
    ]
    assert all("index" not in c for c in calls)
    assert parse_tool_calls("no calls <tool_call> unclosed") == ("no calls <tool_call> unclosed", [])
    assert parse_tool_calls("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=12))
def test_any_split_streams_the_same(cuts):
    bounds = [0, *sorted(cuts), len(TEXT)]
    stream = ToolCallStream()
    deltas = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        deltas += stream.feed(TEXT[a:b])
    deltas += stream.finish()
    assert "".join(d.get("content", "") for d in deltas) == "Let me check."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "f"), (1, "g")]


def test_history_and_tools_render_without_native_support():
    tool = Tool.model_validate({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    out, variables = template_messages(messages, ToolPlan([tool], None, True), CHATML)
    text = render_chat_template(CHATML, out, **variables)
    assert '"name": "f"' in text.split("<|im_start|>user")[0]  # the tools, in a system message first
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n42<|im_end|>" in text
