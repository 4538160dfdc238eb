"""Shared engine fixtures: the packaged model loaded once per test session."""

from __future__ import annotations

import os

import pytest

from vivace.engine.loaders.default_model import default_model_path

# Small KV budget: tests never need more, and allocation stays quick.
TEST_KV_BYTES = 64 << 20


@pytest.fixture(scope="session")
def model_path() -> str:
    return default_model_path()


@pytest.fixture(scope="session")
def llm():
    """The packaged model in float32 (no int8), the configuration checked against transformers."""
    from vivace.engine.llm import LLM

    return LLM(kv_cache_memory_bytes=TEST_KV_BYTES, quantization="none")


@pytest.fixture(scope="session")
def hf_model(model_path: str):
    """transformers' own loading of the same GGUF, float32: the reference nobody here wrote."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(model_path), gguf_file=os.path.basename(model_path), dtype=torch.float32
    )
    model.eval()
    return model


@pytest.fixture(scope="session")
def ours():
    """Our tokenizer, built from the packaged GGUF's metadata."""
    from vivace.engine.loaders.gguf import open_gguf
    from vivace.engine.tokenizer import Tokenizer

    return Tokenizer.from_gguf_metadata(open_gguf(default_model_path()).metadata)


@pytest.fixture(scope="session")
def reference():
    """transformers' tokenizer from the same GGUF: the reference nobody here wrote."""
    from transformers import AutoTokenizer

    directory, name = os.path.split(default_model_path())
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)
