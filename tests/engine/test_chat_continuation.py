"""continue_final_message against transformers' apply_chat_template on the packaged model's template."""

from __future__ import annotations

import pytest

from vivace.engine.chat_continuation import render_continuation
from vivace.engine.chat_template import ChatTemplateError
from vivace.engine.tokenizer import Tokenizer

CONVERSATIONS = {
    "story": [{"role": "user", "content": "Continue:"}, {"role": "assistant", "content": "Once upon a time"}],
    "trailing-space": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2, "}],
    "empty": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": ""}],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d and"},
    ],
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_matches_transformers(ours: Tokenizer, reference, name: str) -> None:
    messages = CONVERSATIONS[name]
    expected = reference.apply_chat_template(
        messages, add_generation_prompt=False, continue_final_message=True, tokenize=False
    )
    assert render_continuation(ours, messages) == expected


def test_ends_inside_the_assistant_turn(ours: Tokenizer) -> None:
    text = render_continuation(ours, CONVERSATIONS["story"])
    assert text.endswith("<|im_start|>assistant\nOnce upon a time")


def test_a_final_message_without_text_is_a_chat_template_error(ours: Tokenizer) -> None:
    with pytest.raises(ChatTemplateError, match="continue_final_message"):
        render_continuation(ours, [{"role": "user", "content": None}])
