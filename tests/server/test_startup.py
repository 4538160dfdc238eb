"""What `vivace serve` prints at startup, and --chat-template replacing the tokenizer's template."""

from __future__ import annotations

import pytest

from vivace.engine.config import EngineConfig, InvalidParameterError
from vivace.engine.engine import LLMEngine
from vivace.engine.model_loading import read_chat_template
from vivace.server.serve import startup_summary

TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<bot>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_engine() -> LLMEngine:
    return LLMEngine(
        EngineConfig(model="random:tiny@0", kv_cache_memory_bytes=4 << 20, max_num_seqs=7, chat_template=TEMPLATE)
    )


def test_startup_summary_says_what_is_served(tiny_engine):
    text = startup_summary(tiny_engine, "tiny", "0.0.0.0", 8123)
    kv_tokens = tiny_engine.scheduler.kv.num_blocks * tiny_engine.config.block_size
    for expected in (
        "tiny (random:tiny@0)",
        "device    cpu",
        "float32",
        f"{kv_tokens:,} tokens",
        "7 running",
        "web UI    http://0.0.0.0:8123/",
        "API       http://0.0.0.0:8123/v1",
    ):
        assert expected in text, text


def test_chat_template_option_replaces_the_tokenizers(tiny_engine):
    text = tiny_engine.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<user>hi<bot>"


def test_chat_template_from_a_file_or_text_and_broken_ones_fail_at_startup(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(TEMPLATE)
    assert read_chat_template(str(path)) == TEMPLATE == read_chat_template(TEMPLATE)
    with pytest.raises(InvalidParameterError, match="chat_template"):
        read_chat_template("{% for m in messages %}")
