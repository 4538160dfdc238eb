"""Chat template rendering, against transformers' apply_chat_template / render_jinja_template."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models

from vivace.engine.chat_template import ChatTemplateError, render_chat_template
from vivace.engine.tokenizer import Tokenizer

CHATS = {
    "single-user": [{"role": "user", "content": "What is the capital of France?"}],
    "with-system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "List three primes."},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about 🐍 and 日本."},
        {"role": "assistant", "content": "Why did the snake…\n\nnever mind."},
        {"role": "user", "content": "  spaces  \n\tand tabs "},
    ],
    "system-multi-turn": [
        {"role": "system", "content": "Be <b>bold</b> & brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ],
    "assistant-last": [
        {"role": "user", "content": "Continue:"},
        {"role": "assistant", "content": "Once upon a time"},
    ],
    "none-valued-key": [{"role": "user", "content": "x", "name": None}],
}


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("chat", list(CHATS))
def test_smollm_template_matches_transformers(
    ours: Tokenizer, reference, chat: str, add_generation_prompt: bool
) -> None:
    messages = CHATS[chat]
    expected = reference.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected


def test_smollm_template_shape(ours: Tokenizer) -> None:
    text = ours.apply_chat_template(CHATS["single-user"])
    assert text.startswith("<|im_start|>system\n")  # the template injects SmolLM's default system prompt
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------------
# Templates written here, exercising the environment transformers gives a template.

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": 'Weather for a city <city> & "region"',
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "Zürich"}}},
        },
    }
]

TEMPLATES = {
    "tools-and-tojson": (
        "{{ bos_token }}{% if tools %}<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n{% endif %}"
        "{% for message in messages %}\n"
        "  {% if message.tool_calls is defined %}{{ message.tool_calls | tojson(indent=2) }}{% endif %}\n"
        "  <{{ message['role'] }}>{{ message['content'] | trim }}{{ eos_token }}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    ),
    "namespace-and-loopcontrols": (
        "{% set ns = namespace(system=none, n=0) %}"
        "{% for m in messages %}{% if m.role == 'system' %}{% set ns.system = m.content %}{% continue %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}[{{ ns.n }}:{{ m.role }}] {{ m.content }}\n{% if ns.n > 2 %}{% break %}{% endif %}"
        "{% endfor %}SYSTEM={{ ns.system }}{{ extra_flag | default('no-flag') }}"
    ),
    "whitespace-control": (
        "{%- for m in messages -%}\n    {{- m.role | upper }}: {{ m.content -}}\n    {% if not loop.last %}\n | {% endif %}\n"
        "{%- endfor %}\n{% if add_generation_prompt %}\nASSISTANT:{% endif %}"
    ),
}

MESSAGES = [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "  weather in Zürich?  "},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}]},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "bye"},
]

SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}


def _transformers_render(template: str, messages, add_generation_prompt: bool, **kwargs) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=template, add_generation_prompt=add_generation_prompt, **kwargs
    )
    return rendered[0]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("with_tools", [True, False])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_custom_templates_match_transformers(name: str, with_tools: bool, add_generation_prompt: bool) -> None:
    kwargs = {"tools": TOOLS} if with_tools else {}
    if name == "namespace-and-loopcontrols" and with_tools:
        kwargs["extra_flag"] = "+flag"
    expected = _transformers_render(TEMPLATES[name], MESSAGES, add_generation_prompt, **SPECIALS, **kwargs)
    ours = render_chat_template(
        TEMPLATES[name], MESSAGES, add_generation_prompt=add_generation_prompt, special_tokens=SPECIALS, **kwargs
    )
    assert ours == expected


def test_tojson_does_not_html_escape() -> None:
    out = render_chat_template("{{ messages[0] | tojson }}", [{"role": "user", "content": "<a> & 'é'"}])
    assert out == '{"role": "user", "content": "<a> & \'é\'"}'


def test_strftime_now_is_available() -> None:
    out = render_chat_template("{{ strftime_now('%Y') }}", [{"role": "user", "content": "x"}])
    assert out.isdigit() and len(out) == 4


def test_raise_exception_becomes_chat_template_error() -> None:
    template = (
        "{% if messages[0].role != 'system' %}{{ raise_exception('Conversation must start with system') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="Conversation must start with system"):
        render_chat_template(template, [{"role": "user", "content": "x"}])


def test_syntax_error_is_reported() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        render_chat_template("{% for m in messages %}", [{"role": "user", "content": "x"}])


def test_sandbox_blocks_attribute_escape() -> None:
    with pytest.raises(ChatTemplateError):
        render_chat_template("{{ messages.__class__.__mro__[1].__subclasses__() }}", [{"role": "user", "content": "x"}])


def test_missing_template_is_a_clear_error() -> None:
    tokenizer = Tokenizer(BackendTokenizer(models.BPE()), chat_template=None)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])


def test_non_dict_message_is_rejected() -> None:
    with pytest.raises(ChatTemplateError, match="must be dicts"):
        render_chat_template("{{ messages }}", ["hello"])  # type: ignore[list-item]
