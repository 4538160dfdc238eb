"""`vivace serve` wiring, the served model name and admission limits, without loading a model."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vivace import cli
from vivace.server import serve
from vivace.server.errors import APIError
from vivace.server.state import ServerState


def test_serve_passes_options(monkeypatch):
    calls = []
    monkeypatch.setattr(serve, "run_server", lambda *args, **kwargs: calls.append((args, kwargs)))
    result = CliRunner().invoke(
        cli.app,
        ["serve", "m.gguf", "--port", "9001", "--api-key", "k", "--max-queue", "3", "--max-model-len", "1024"]
        + ["--allowed-origins", "https://a.example,https://b.example", "--allowed-origins", "http://c:1"]
        + ["--max-connections", "50"],
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        (
            ("m.gguf",),
            {
                "host": "127.0.0.1",
                "port": 9001,
                "api_key": "k",
                "max_queue": 3,
                "max_model_len": 1024,
                "device": "cpu",
                "drain_timeout": 30.0,
                "flows_dir": None,
                "max_connections": 50,
                "allowed_origins": ["https://a.example", "https://b.example", "http://c:1"],
            },
        )
    ]


def test_serve_without_model_serves_the_default(monkeypatch):
    calls = []
    monkeypatch.setattr(serve, "run_server", lambda *args, **kwargs: calls.append(args))
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert calls == [(None,)]


@pytest.mark.parametrize("first", ["vivace.server.app", "vivace.flows.server", "vivace.server.state"])
def test_server_and_flows_import_in_any_order(first):
    """No import cycle between the app and the flow routes (each imports ServerState from server.state)."""
    code = f"import {first}, vivace.server.app, vivace.flows.server"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_model_name():
    assert serve.model_name_for("/models/SmolLM2.Q4_1.gguf") == "SmolLM2.Q4_1"
    assert serve.model_name_for("/models/qwen2-dir/") == "qwen2-dir"


def _state(max_queue: int | None) -> ServerState:
    engine = SimpleNamespace(engine=SimpleNamespace(config=SimpleNamespace(max_num_seqs=2)), tokenizer=None)
    return ServerState(engine, "m", None, max_queue)  # type: ignore[arg-type]


def test_api_key_from_the_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(serve, "run_server", lambda *args, **kwargs: calls.append(kwargs))
    assert CliRunner().invoke(cli.app, ["serve"], env={"VIVACE_API_KEY": "from-env"}).exit_code == 0
    assert calls[0]["api_key"] == "from-env"


def test_queue_limit_refuses_with_429():
    state = _state(max_queue=1)
    for _ in range(3):  # two running plus one waiting
        state.admit()
    with pytest.raises(APIError) as info:
        state.admit()
    assert info.value.status == 429
    state.release()
    state.admit()


def test_no_queue_limit():
    state = _state(max_queue=None)
    for _ in range(100):
        state.admit()
