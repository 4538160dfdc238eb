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


def _serve(monkeypatch, *args: str) -> list:
    calls = []
    monkeypatch.setattr(serve, "run_server", lambda *a, **kw: calls.append((a, kw)))
    result = CliRunner().invoke(cli.app, ["serve", *args])
    assert result.exit_code == 0, result.output
    return calls


def test_serve_passes_options(monkeypatch):
    calls = _serve(
        monkeypatch,
        *["m.gguf", "--port", "9001", "--api-key", "k", "--max-queue", "3", "--max-model-len", "1024"],
        *["--allowed-origins", "https://a.example,https://b.example", "--allowed-origins", "http://c:1"],
        *["--max-connections", "50"],
    )
    assert calls == [
        (
            ("m.gguf",),
            {
                "host": "127.0.0.1",
                "port": 9001,
                "api_key": "k",
                "max_queue": 3,
                "served_model_name": None,
                "log_level": "info",
                "drain_timeout": 30.0,
                "flows_dir": None,
                "engine_options": {"max_model_len": 1024},
                "max_connections": 50,
                "allowed_origins": ["https://a.example", "https://b.example", "http://c:1"],
            },
        )
    ]


def test_serve_without_model_serves_the_default(monkeypatch):
    (args, kwargs), *_ = _serve(monkeypatch)
    assert args == (None,) and kwargs["engine_options"] == {}


def test_model_as_an_option_and_vllm_engine_flags(monkeypatch):
    (args, kwargs), *_ = _serve(
        monkeypatch,
        "-m",
        "m.gguf",
        "--served-model-name",
        "smol",
        "--max-num-seqs",
        "8",
        "--max-num-batched-tokens",
        "256",
        "--kv-cache-memory",
        "0.25",
        "--dtype",
        "bfloat16",
        "--kv-cache-dtype",
        "float16",
        "--quantization",
        "none",
        "--no-enable-prefix-caching",
        "--chat-template",
        "t.jinja",
        "--tokenizer",
        "tok.gguf",
        "--seed",
        "7",
        "--enforce-eager",
        "--log-level",
        "warning",
    )
    assert args == ("m.gguf",)
    assert kwargs["served_model_name"] == "smol" and kwargs["log_level"] == "warning"
    assert kwargs["engine_options"] == {
        "max_num_seqs": 8,
        "max_num_batched_tokens": 256,
        "kv_cache_memory_fraction": 0.25,
        "dtype": "bfloat16",
        "kv_cache_dtype": "float16",
        "quantization": "none",
        "enable_prefix_caching": False,
        "chat_template": "t.jinja",
        "tokenizer": "tok.gguf",
        "seed": 7,
        "cuda_graphs": False,
    }


def test_two_different_models_are_a_usage_error(monkeypatch):
    monkeypatch.setattr(serve, "run_server", lambda *a, **kw: None)
    result = CliRunner().invoke(cli.app, ["serve", "a.gguf", "-m", "b.gguf"])
    assert result.exit_code == 2 and "two models" in result.output


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
