"""Loader fixtures: the packaged GGUF loaded once, and a writer for tiny synthetic GGUF files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from vivace.engine.loaders.default_model import default_model_path
from vivace.engine.loaders.gguf import load_gguf
from vivace.engine.loaders.types import LoadedModel

# Shape of the tiny synthetic model; K-quants need rows of a multiple of 256 values.
TINY = {"hidden": 256, "heads": 4, "kv_heads": 2, "head_dim": 64, "ffn": 512, "layers": 2}
TINY_VOCAB = 260


def _byte_tokens() -> list[str]:
    """GPT-2's byte alphabet: one token per byte, so every text is encodable without merges."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelled = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in spelled:
            spelled[b] = chr(256 + extra)
            extra += 1
    return [spelled[b] for b in range(256)]


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Q/K rows (LlamaModel.permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tiny_hf_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights of the tiny model under llama.cpp names, in HF (unpermuted) layout."""
    rng = np.random.default_rng(seed)
    h, ffn, q, kv = TINY["hidden"], TINY["ffn"], TINY["heads"] * TINY["head_dim"], TINY["kv_heads"] * TINY["head_dim"]
    shapes = {"token_embd.weight": (TINY_VOCAB, h), "output_norm.weight": (h,), "output.weight": (TINY_VOCAB, h)}
    for i in range(TINY["layers"]):
        shapes.update(
            {
                f"blk.{i}.attn_norm.weight": (h,),
                f"blk.{i}.ffn_norm.weight": (h,),
                f"blk.{i}.attn_q.weight": (q, h),
                f"blk.{i}.attn_k.weight": (kv, h),
                f"blk.{i}.attn_v.weight": (kv, h),
                f"blk.{i}.attn_output.weight": (h, q),
                f"blk.{i}.ffn_gate.weight": (ffn, h),
                f"blk.{i}.ffn_up.weight": (ffn, h),
                f"blk.{i}.ffn_down.weight": (h, ffn),
            }
        )
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    weights: dict[str, np.ndarray] | None = None,
    matrix_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32,
    raw: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]] | None = None,
    extra_kv: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """Write a tiny Llama-shaped GGUF; 2-D weights in `matrix_type`, Q/K permuted as llama.cpp does.

    `raw` overrides tensors with already-encoded bytes of a given type (for types numpy cannot quantize).
    """
    weights = tiny_hf_weights() if weights is None else weights
    raw = raw or {}
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(512)
    writer.add_embedding_length(TINY["hidden"])
    writer.add_feed_forward_length(TINY["ffn"])
    writer.add_block_count(TINY["layers"])
    writer.add_head_count(TINY["heads"])
    writer.add_head_count_kv(TINY["kv_heads"])
    writer.add_rope_dimension_count(TINY["head_dim"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(500000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([*_byte_tokens(), "<s>", "</s>", "<|eot|>", "<think>"])
    writer.add_token_types([1] * 256 + [3, 3, 3, 4])
    writer.add_token_merges([])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)
    writer.add_eot_token_id(258)
    writer.add_add_bos_token(True)
    writer.add_chat_template("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    if extra_kv is not None:
        extra_kv(writer)
    for name, values in weights.items():
        if name in raw:
            data, qtype = raw[name]
            writer.add_tensor(name, data, raw_dtype=qtype)
            continue
        if arch in ("llama", "mistral") and name.endswith("attn_q.weight"):
            values = llama_cpp_permute(values, TINY["heads"])
        elif arch in ("llama", "mistral") and name.endswith("attn_k.weight"):
            values = llama_cpp_permute(values, TINY["kv_heads"])
        if values.ndim == 2 and matrix_type != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, gguf.quants.quantize(values, matrix_type), raw_dtype=matrix_type)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def smollm_path() -> str:
    return default_model_path()


@pytest.fixture(scope="session")
def smollm(smollm_path: str) -> LoadedModel:
    """The packaged SmolLM2 GGUF through our loader, float32."""
    return load_gguf(smollm_path)


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `tiny_gguf(name="m.gguf", **write_tiny_gguf_kwargs)` -> path of a fresh tiny GGUF."""

    def make(name: str = "tiny.gguf", **kwargs: object) -> Path:
        return write_tiny_gguf(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def tiny_weights() -> dict[str, np.ndarray]:
    """The tiny model's float32 weights (llama.cpp names, HF layout) that `tiny_gguf` writes by default."""
    return tiny_hf_weights()
