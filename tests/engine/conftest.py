"""Shared engine fixtures: the packaged model loaded once per test session."""

from __future__ import annotations

import os

import pytest

from tests.conftest import make_test_llm
from vivace.engine.loaders.default_model import default_model_path


@pytest.fixture(scope="session")
def model_path() -> str:
    return default_model_path()


@pytest.fixture(scope="session")
def llm():
    """The test engine (float32, no int8) with the model's full context: the configuration checked against transformers."""
    return make_test_llm()


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
    from vivace.engine.loaders.tokenizer_builders import tokenizer_from_gguf_metadata

    return tokenizer_from_gguf_metadata(open_gguf(default_model_path()).metadata)


@pytest.fixture(scope="session")
def reference():
    """transformers' tokenizer from the same GGUF: the reference nobody here wrote."""
    from transformers import AutoTokenizer

    directory, name = os.path.split(default_model_path())
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)
