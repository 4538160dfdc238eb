"""`vivace chat`'s slash commands, handled locally and never sent to the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vivace.cli_backends import sampling_params
from vivace.engine.config import InvalidParameterError

HELP = """\
/help                 this list
/system TEXT          set the system prompt (the conversation so far is kept); /system alone removes it
/set NAME VALUE       change a sampling option: temperature, top_p, top_k, max_tokens, seed (none = unset)
/show                 the system prompt and the sampling options in use
/reset                forget the conversation (the system prompt stays)
/exit                 leave (Ctrl-D too)
Anything else is sent to the model. Up/Down recall earlier lines; Ctrl-C stops a reply."""

SETTABLE = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int}


@dataclass
class ChatSession:
    """A conversation and the options its next reply uses."""

    sampling: dict[str, Any]
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)  # user and assistant messages

    def messages(self) -> list[dict[str, str]]:
        """The conversation as sent: the system prompt (if any), then the turns."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns


class ExitChat(Exception):
    """/exit was typed."""


def run_command(session: ChatSession, line: str) -> str:
    """Carry out one slash command on `session`; the text to show the user. ExitChat on /exit."""
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    if name in ("/exit", "/quit", "/bye"):
        raise ExitChat
    if name in ("/help", "/?"):
        return HELP
    if name == "/reset":
        session.turns.clear()
        return "(history cleared)"
    if name == "/system":
        session.system = rest or None
        return f"(system prompt set: {rest})" if rest else "(system prompt removed)"
    if name == "/show":
        options = ", ".join(f"{k} {v}" for k, v in session.sampling.items())
        return f"system: {session.system or '(none)'}\n{options}"
    if name == "/set":
        return _set(session, rest)
    return f"unknown command {name}; /help lists the commands"


def _set(session: ChatSession, rest: str) -> str:
    key, _, value = rest.partition(" ")
    key, value = key.replace("-", "_"), value.strip()
    if key not in SETTABLE or not value:
        return f"usage: /set NAME VALUE with NAME one of {', '.join(SETTABLE)}"
    try:
        parsed = None if value.lower() == "none" and key == "seed" else SETTABLE[key](value)
    except ValueError:
        return f"{key} takes a number, not {value!r}"
    trial = {**session.sampling, key: parsed}
    try:
        sampling_params(trial)
    except InvalidParameterError as e:
        return f"not set: {e}"
    session.sampling = trial
    return f"({key} = {parsed})"
