"""A conversation rendered so the model continues its last message (`continue_final_message`).

As transformers does it: the final message's text gets a marker appended, the template renders the
conversation without a generation prompt, and the text is cut where the marker landed, so whatever
the template writes after a message (end-of-turn tokens) is left off.
"""

from __future__ import annotations

import uuid
from typing import Any

from vivace.engine.chat_template import ChatTemplateError
from vivace.engine.tokenizer import Tokenizer


def render_continuation(tokenizer: Tokenizer, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The chat text ending inside the last message, right after its content."""
    if not messages or not isinstance(messages[-1].get("content"), str):
        raise ChatTemplateError("continue_final_message needs a final message with text content")
    marker = f"VIVACE_CONTINUE_{uuid.uuid4().hex} "  # unguessable: the client's text cannot contain it
    marked = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + marker}]
    rendered = tokenizer.apply_chat_template(marked, add_generation_prompt=False, **kwargs)
    at = rendered.rfind(marker.strip())
    if at < 0:
        raise ChatTemplateError("the chat template dropped the final message, so it cannot be continued")
    # A template that trims the message's trailing whitespace also trimmed the marker's: trim likewise.
    return rendered[:at] if rendered[at : at + len(marker)] == marker else rendered[:at].rstrip()
