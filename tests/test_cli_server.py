"""`vivace generate` and `vivace chat` against a real running server (--url / VIVACE_URL), chat's
slash commands and line editing, and every command's help (-h, 80 columns, --model)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable

import click
import httpx
import openai
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.live_server import start_uvicorn, stop_uvicorn
from vivace import cli

MODEL = "smollm2-cli"
runner = CliRunner()


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
    return found


COMMANDS = _commands(typer.main.get_command(cli.app))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_short_help_on_every_command_fits_80_columns(path):
    result = runner.invoke(cli.app, [*path, "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:")
    assert all(len(line) <= 80 for line in result.output.splitlines()), result.output
    assert "…" not in result.output  # nothing cut short
    assert runner.invoke(cli.app, [*path, "--help"], env={"COLUMNS": "80"}).output == result.output


def test_every_command_that_runs_a_model_takes_model():
    takes_device = [p for p, c in COMMANDS if any(o.name == "device" for o in c.params)]
    assert {p[-1] for p in takes_device} >= {"generate", "chat", "batch", "serve"}
    for path, command in COMMANDS:
        if path in takes_device:
            options = {opt for param in command.params for opt in getattr(param, "opts", [])}
            assert "--model" in options, path


@pytest.fixture(scope="module")
def server(serving_engine):
    from vivace.server.app import create_app

    uvicorn_server, thread, url = start_uvicorn(create_app(serving_engine.engine, MODEL))
    yield url
    stop_uvicorn(uvicorn_server, thread)


def _chat_requests(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vivace_requests_total" and s.labels == {
                "endpoint": "/v1/chat/completions",
                "status": "200",
            }:
                return s.value
    return 0.0


@pytest.mark.slow
def test_generate_streams_from_a_running_server(server, monkeypatch):
    monkeypatch.setattr(cli, "_load", lambda *a: pytest.fail("the model was loaded in-process"))
    client = openai.OpenAI(base_url=server + "/v1", api_key="none")
    expected = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a color."}], max_tokens=10, temperature=0
    )
    args = ["generate", "Name a color.", "--temperature", "0", "--max-tokens", "10"]
    result = runner.invoke(cli.app, [*args, "--url", server])
    assert result.exit_code == 0, result.output
    assert result.output == expected.choices[0].message.content + "\n"
    from_env = runner.invoke(cli.app, args, env={"VIVACE_URL": server})
    assert from_env.exit_code == 0 and from_env.output == result.output
    raw = runner.invoke(cli.app, ["generate", "The sky is", "--no-chat", "--max-tokens", "4", "--url", server])
    assert raw.exit_code == 0 and raw.output.strip()


def test_generate_with_an_unreachable_url_is_a_usage_error():
    result = runner.invoke(cli.app, ["generate", "hi", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "cannot reach" in result.output


@pytest.mark.slow
def test_chat_commands_run_locally_and_only_turns_reach_the_server(server, monkeypatch):
    monkeypatch.setattr(cli, "_load", lambda *a: pytest.fail("the model was loaded in-process"))
    before = _chat_requests(server)
    lines = [
        "/help",
        "/set temperature 0.2",
        "/set top_p 7",
        "/set temperature warm",
        "/system Answer in one word.",
        "/show",
        "/frobnicate",
        "Hello!",
        "/set max_tokens 3",
        "What is 2+2?",
        "/exit",
        "never sent",
    ]
    result = runner.invoke(cli.app, ["chat", "--url", server, "--max-tokens", "6"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "/set NAME VALUE" in out  # the help
    assert "(temperature = 0.2)" in out and "not set: top_p" in out and "takes a number" in out
    assert "(system prompt set: Answer in one word.)" in out
    assert "system: Answer in one word.\nmax_tokens 6, temperature 0.2, top_p 0.95, top_k 0, seed None" in out
    assert "unknown command /frobnicate" in out
    assert "(reply cut at max_tokens 3" in out
    assert _chat_requests(server) - before == 2  # the two turns; no command reached the model


def _read_until(fd: int, done: Callable[[bytes], bool], seen: bytearray, timeout: float = 120) -> None:
    """Read the terminal into `seen` until `done(seen)`."""
    deadline = time.monotonic() + timeout
    while not done(bytes(seen)):
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            seen.extend(os.read(fd, 4096))


@pytest.mark.slow
def test_chat_in_a_terminal_recalls_lines_with_the_up_arrow(server):
    """In a real terminal: Up recalls the last line (readline), instead of typing `^[[A` to the model."""
    before = _chat_requests(server)
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vivace.cli", "chat", "--url", server],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        close_fds=True,
    )
    os.close(child)
    seen = bytearray()
    # after n /help: n help texts and a fresh prompt after each (the first prompt came before them)
    helps = lambda n: lambda out: out.count(b"Up/Down recall") >= n and out.count(b">>> ") >= n + 1  # noqa: E731
    try:
        _read_until(main, lambda out: b">>> " in out, seen)
        os.write(main, b"/help\r")
        _read_until(main, helps(1), seen)
        os.write(main, b"\x1b[A\r")  # Up, Enter: /help again
        _read_until(main, helps(2), seen)
        os.write(main, b"/exit\r")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    assert seen.count(b"Up/Down recall") == 2
    assert _chat_requests(server) == before  # the recalled line was the command, not an escape sequence
