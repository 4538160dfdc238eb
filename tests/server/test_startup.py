"""What `vivace serve` prints at startup and per request, a taken port, and --chat-template."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.live_server import free_port
from vivace.engine.config import EngineConfig, InvalidParameterError
from vivace.engine.engine import LLMEngine
from vivace.engine.model_loading import read_chat_template
from vivace.server.banner import human_count, parameter_count, startup_banner
from vivace.server.listen import ListenError, bind_listener

TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<bot>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_engine() -> LLMEngine:
    return LLMEngine(
        EngineConfig(model="random:tiny@0", kv_cache_memory_bytes=4 << 20, max_num_seqs=7, chat_template=TEMPLATE)
    )


def test_banner_says_what_is_served(tiny_engine):
    text = startup_banner(tiny_engine, "tiny", "0.0.0.0", 8123)
    cfg = tiny_engine.model_config
    kv_tokens = tiny_engine.scheduler.kv.num_blocks * tiny_engine.config.block_size
    kv_mib = kv_tokens * tiny_engine.model.kv_slot_bytes(tiny_engine.kv_dtype) / (1 << 20)
    rows = dict(re.findall(r"^  (\S+(?: \S+)?)\s{2,}(.*)$", text, re.M))
    assert rows["model"] == "tiny (random:tiny@0)"
    assert rows["arch"].startswith(f"{cfg.architecture}, ") and f"{cfg.num_layers} layers" in rows["arch"]
    assert rows["context"] == f"{tiny_engine.max_model_len:,} tokens"
    assert rows["KV cache"].startswith(f"{kv_tokens:,} tokens, {kv_mib:,.1f} MiB")
    assert rows["batch"].startswith("7 sequences")
    assert rows["threads"].startswith(str(torch.get_num_threads()))
    assert rows["device"].startswith("cpu (")
    assert rows["web UI"] == "http://0.0.0.0:8123/"
    assert rows["API"] == "http://0.0.0.0:8123/v1"
    assert "[::1]:8123" in startup_banner(tiny_engine, "tiny", "::1", 8123)


@pytest.mark.slow
def test_parameter_count_matches_the_hf_reference():
    """SmolLM2-135M has 134,515,008 parameters (HF transformers' count of the same checkpoint)."""
    engine = LLMEngine(EngineConfig(kv_cache_memory_bytes=4 << 20))
    assert parameter_count(engine) == 134_515_008
    assert human_count(134_515_008) == "134.5M"


def test_a_taken_port_is_a_listen_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind_listener("127.0.0.1", port)
    with pytest.raises(ListenError, match="unknown host"):
        bind_listener("no-such-host.invalid", 8000)
    bind_listener("127.0.0.1", 0).close()


def _serve(*args: str, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "vivace.cli", "serve", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )


@pytest.mark.slow
def test_port_in_use_fails_before_the_model_loads(tmp_path):
    """Exit 1 with one line, before loading: a model path that does not exist is never looked at."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for model in ("/nonexistent/model.gguf", "smollm2"):
            proc = subprocess.run(
                [sys.executable, "-m", "vivace.cli", "serve", "--model", model, "--port", str(port)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.splitlines() == [
                f"error: port {port} on 127.0.0.1 is already in use; stop the server listening there or choose "
                "another --port"
            ]
            assert "ready" not in proc.stdout


REQUEST_LINE = re.compile(
    r"INFO: +(\S+): prompt (\d+) tok, completion (\d+) tok, TTFT ([\d.]+) s, ([\d.]+|-) tok/s, ([\d.]+) s, "
    r"finish (\w+)"
)


@pytest.mark.slow
def test_real_server_banner_and_one_line_per_request(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    process = _serve("--port", str(port), "--max-model-len", "2048", log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while "web UI" not in log.read_text() or "API " not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no banner"
            time.sleep(0.2)
        # The banner means ready: the port answers at once.
        assert httpx.get(base + "/health").status_code == 200
        assert httpx.get(base + "/").status_code == 200
        assert httpx.get(base + "/static/app.js").status_code == 200
        assert httpx.get(base + "/static/missing.js").status_code == 404
        client = openai.OpenAI(base_url=base + "/v1", api_key="none")
        model = client.models.list().data[0].id
        done = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0
        )
        chunks = list(
            client.completions.create(
                model=model,
                prompt="Once upon a time",
                max_tokens=8,
                stream=True,
                temperature=0,
                stream_options={"include_usage": True},
            )
        )
        streamed = chunks[-1].usage
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = log.read_text()
    banner = text[text.index("vivace ") :]
    for label, pattern in [
        ("model", r"SmolLM2-135M-Instruct\.Q4_1 \(.*\.gguf\)"),
        ("arch", r"llama, 134\.5M parameters, 30 layers, vocabulary 49,152"),
        ("weights", r"gguf quantization, float32 activations, (cpu|torch) kernels"),
        ("context", r"2,048 tokens"),
        ("KV cache", r"[\d,]+ tokens, [\d,.]+ MiB \(float16, [\d,]+ blocks of 16\)"),
        ("threads", r"\d+ \(torch intra-op\)"),
        ("device", r"cpu \(.+\)"),
        ("web UI", re.escape(f"{base}/")),
        ("API", re.escape(f"{base}/v1")),
    ]:
        assert re.search(rf"^  {label} +{pattern}$", banner, re.M), (label, banner)
    lines = {m[1]: m for m in REQUEST_LINE.finditer(text)}
    chat = lines[done.id + "-0"]
    assert (int(chat[2]), int(chat[3]), chat[7]) == (
        done.usage.prompt_tokens,
        done.usage.completion_tokens,
        done.choices[0].finish_reason,
    )
    stream = lines[chunks[0].id + "-0"]
    assert (int(stream[2]), int(stream[3])) == (streamed.prompt_tokens, streamed.completion_tokens)
    assert 0 < float(stream[4]) <= float(stream[6])  # TTFT within the total
    # The web UI's files and probes leave no access lines; the API calls and a 404 do.
    assert "/static/app.js" not in text and '"GET / ' not in text and "/health" not in text
    assert '"GET /static/missing.js HTTP/1.1" 404' in text
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in text


def test_chat_template_option_replaces_the_tokenizers(tiny_engine):
    text = tiny_engine.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<user>hi<bot>"


def test_chat_template_from_a_file_or_text_and_broken_ones_fail_at_startup(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(TEMPLATE)
    assert read_chat_template(str(path)) == TEMPLATE == read_chat_template(TEMPLATE)
    with pytest.raises(InvalidParameterError, match="chat_template"):
        read_chat_template("{% for m in messages %}")
