"""Load a llama.cpp GGUF file: metadata -> ModelConfig, tensors -> dequantized HF-named weights."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as GGMLType

from vivace.engine.config import ModelConfig
from vivace.engine.kernels.block_quant import BLOCK_BYTES, QuantBlocks
from vivace.engine.loaders.errors import CorruptModelError, UnsupportedModelError
from vivace.engine.loaders.gguf_file import GGUFFile, GGUFTensorInfo
from vivace.engine.loaders.lazy_weights import Deferred, LazyWeights
from vivace.engine.loaders.tokenizer_builders import tokenizer_from_gguf_metadata
from vivace.engine.loaders.types import LoadedModel, check_weight_shapes

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
# llama.cpp's converter permutes Q/K rows for its interleaved ("NORM") RoPE on these; qwen2 uses NEOX
# RoPE (HF's rotate_half layout) and is stored unpermuted.
_PERMUTED_QK_ARCHITECTURES = ("llama", "mistral")
SUPPORTED_TENSOR_TYPES = (
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q8_0,
    GGMLType.Q2_K,
    GGMLType.Q3_K,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
)
# llama3 RoPE frequency divisors: moved into ModelConfig.rope_scaling, not kept as a weight.
_ROPE_FREQS = "rope_freqs.weight"

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}
# Gemma 3's four norms per layer: llama.cpp's ffn_norm is its pre-feed-forward norm.
_GEMMA3_LAYER_NAMES = {
    **_LAYER_NAMES,
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
_LAYER_NAMES_BY_ARCH = {"gemma3": _GEMMA3_LAYER_NAMES}
# Gemma's RMSNorm scales by (1 + w); llama.cpp's converter stores 1 + w, HF checkpoints store w.
_NORMS_STORED_PLUS_ONE = ("gemma3",)
# llama.cpp's Gemma 3 constants where the GGUF carries none: every 6th layer global, the others a
# sliding window with RoPE base 10000 (llama-model.cpp).
_GEMMA3_SLIDING_PATTERN = 6
_GEMMA3_LOCAL_ROPE_BASE = 10000.0
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def load_gguf(path: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Read a GGUF file fully (config, tokenizer, dequantized weights in `dtype`); all errors surface here."""
    file = open_gguf(path)
    meta = file.metadata
    architecture = meta.get("general.architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: architecture {architecture!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    tensors = {tensor.name: tensor for tensor in file.tensors}
    freq_factors = dequantize_tensor(file, tensors[_ROPE_FREQS]) if _ROPE_FREQS in tensors else None
    config = gguf_model_config(meta, set(tensors), path, freq_factors)
    tokenizer = tokenizer_from_gguf_metadata(meta)
    entries: dict[str, torch.Tensor | Deferred] = {}
    blocks = {}
    for tensor in file.tensors:
        if tensor.name == _ROPE_FREQS:
            continue
        name = hf_tensor_name(tensor.name, path, architecture)
        check_tensor_type(file, tensor)
        heads = None
        if architecture in _PERMUTED_QK_ARCHITECTURES and tensor.name.endswith((".attn_q.weight", ".attn_q.bias")):
            heads = config.num_heads
        elif architecture in _PERMUTED_QK_ARCHITECTURES and tensor.name.endswith((".attn_k.weight", ".attn_k.bias")):
            heads = config.num_kv_heads
        minus_one = architecture in _NORMS_STORED_PLUS_ONE and tensor.name.endswith("norm.weight")
        load = partial(_float_tensor, file, tensor, heads, minus_one, dtype)
        # Matrices in a block format the CPU kernel computes on are kept as stored (rows permuted alike) and
        # dequantized only if something reads them as floats (quantization other than "gguf", an embedding).
        if int(tensor.tensor_type) in BLOCK_BYTES and len(tensor.shape) == 2:
            raw = np.array(file.tensor_bytes(tensor))
            blocks[name] = QuantBlocks(
                torch.from_numpy(raw if heads is None else unpermute_qk(raw, heads)), int(tensor.tensor_type)
            )
            entries[name] = Deferred(tuple(tensor.shape), load)
        else:
            entries[name] = load()
    weights = LazyWeights(entries)
    check_weight_shapes(config, weights, path)
    return LoadedModel(config=config, weights=weights, tokenizer=tokenizer, blocks=blocks)


def _float_tensor(
    file: GGUFFile, tensor: GGUFTensorInfo, heads: int | None, minus_one: bool, dtype: torch.dtype
) -> torch.Tensor:
    """A tensor dequantized to `dtype`, Q/K rows un-permuted for `heads` heads, norms stored plus one undone."""
    values = dequantize_tensor(file, tensor)
    if minus_one:
        values -= 1.0
    if heads is not None:
        values = unpermute_qk(values, heads)
    return torch.from_numpy(values).to(dtype)


def open_gguf(path: str) -> GGUFFile:
    """Parse a GGUF header; missing, empty, non-GGUF, corrupt or truncated files raise here."""
    return GGUFFile(path)


def check_tensor_type(file: GGUFFile, tensor: GGUFTensorInfo) -> None:
    """Raise UnsupportedModelError for a tensor type this loader cannot dequantize."""
    if tensor.tensor_type not in SUPPORTED_TENSOR_TYPES:
        supported = ", ".join(t.name for t in SUPPORTED_TENSOR_TYPES)
        raise UnsupportedModelError(
            f"{file.path}: tensor {tensor.name!r} has type {tensor.tensor_type.name}, which is not supported; "
            f"supported: {supported}"
        )


def dequantize_tensor(file: GGUFFile, tensor: GGUFTensorInfo) -> np.ndarray:
    """Dequantize to a writable float32 array of the tensor's (torch-order) shape."""
    check_tensor_type(file, tensor)
    values = np.asarray(gguf.quants.dequantize(file.tensor_bytes(tensor), tensor.tensor_type), dtype=np.float32)
    if not values.flags.writeable or not values.flags.c_contiguous:
        values = np.array(values, dtype=np.float32, order="C")
    return values.reshape(tensor.shape)


def unpermute_qk(values: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE) so HF's rotate_half RoPE applies."""
    rows = values.shape[0]
    half = rows // num_heads // 2
    grouped = values.reshape(num_heads, half, 2, *values.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2)).reshape(values.shape)


def hf_tensor_name(name: str, path: str, architecture: str = "llama") -> str:
    """The HF transformers name of a llama.cpp tensor name in a model of `architecture`."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    layer_names = _LAYER_NAMES_BY_ARCH.get(architecture, _LAYER_NAMES)
    match = _LAYER_RE.match(name)
    if match and match.group(2) in layer_names:
        return f"model.layers.{match.group(1)}.{layer_names[match.group(2)]}"
    raise UnsupportedModelError(f"{path}: tensor {name!r} is not part of a {architecture} model; cannot map it")


def gguf_model_config(
    meta: Mapping[str, Any], tensor_names: set[str], path: str, freq_factors: np.ndarray | None = None
) -> ModelConfig:
    """Map llama.cpp metadata keys (`{arch}.embedding_length`, ...) to a ModelConfig."""
    arch = meta["general.architecture"]

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if isinstance(value, list):  # per-layer arrays: only uniform ones are supported
            if not value or any(v != value[0] for v in value):
                raise UnsupportedModelError(f"{path}: {arch}.{key} varies per layer ({value}); not supported")
            value = value[0]
        return value

    def required(key: str) -> Any:
        value = get(key)
        if value is None:
            raise CorruptModelError(f"{path}: metadata key {arch}.{key} is missing")
        return value

    hidden, heads = int(required("embedding_length")), int(required("attention.head_count"))
    head_dim = get("attention.key_length") or get("rope.dimension_count") or hidden // heads
    tokens = meta.get("tokenizer.ggml.tokens") or []
    eos_ids = [meta.get(f"tokenizer.ggml.{key}") for key in ("eos_token_id", "eot_token_id", "eom_token_id")]
    num_layers = int(required("block_count"))
    gemma = {}
    if arch == "gemma3":
        gemma = _gemma3_config(get, num_layers, hidden // heads, int(head_dim))
        if "<end_of_turn>" in tokens:  # a chat turn's end: stops generation as HF's generation_config says
            eos_ids.append(tokens.index("<end_of_turn>"))
    return ModelConfig(
        architecture=arch,
        vocab_size=int(get("vocab_size") or len(tokens)),
        hidden_size=hidden,
        intermediate_size=int(required("feed_forward_length")),
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv") or heads),
        head_dim=int(head_dim),
        rms_norm_eps=_float32_value(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=_float32_value(get("rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(get, freq_factors),
        max_position_embeddings=int(get("context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=list(dict.fromkeys(int(i) for i in eos_ids if i is not None)),
        **gemma,
    )


def _gemma3_config(get: Any, num_layers: int, width_per_head: int, head_dim: int) -> dict[str, Any]:
    """Gemma 3's sliding-window layout, local RoPE base and attention scale, as llama.cpp derives them."""
    pattern = _GEMMA3_SLIDING_PATTERN
    window = get("attention.sliding_window")
    return {
        "layer_types": [
            "full_attention" if (i + 1) % pattern == 0 or not window else "sliding_attention" for i in range(num_layers)
        ],
        "sliding_window": int(window) if window else None,
        "rope_local_theta": _GEMMA3_LOCAL_ROPE_BASE,
        # llama.cpp: 1/sqrt(hidden / heads) for the 27B (62 layers), 1/sqrt(head_dim) for the others.
        "query_pre_attn_scalar": float(width_per_head if num_layers == 62 else head_dim),
        "final_logit_softcapping": get("final_logit_softcapping"),
    }


def _rope_scaling(get: Any, freq_factors: np.ndarray | None) -> dict[str, Any] | None:
    """HF-style rope_scaling; llama3 files carry per-frequency divisors (`rope_freqs.weight`) instead.

    {"rope_type": "freq_factors", "factors": [f_0, ...]} (head_dim / 2 floats) means, as in llama.cpp:
    inv_freq[i] = rope_theta ** (-2i / head_dim) / factors[i]; llama3's factor/low/high smoothing is baked in.
    """
    if freq_factors is not None:
        return {"rope_type": "freq_factors", "factors": [float(f) for f in freq_factors.reshape(-1)]}
    kind = get("rope.scaling.type")
    factor = get("rope.scaling.factor")
    if kind in (None, "none") or not factor:
        return None
    scaling: dict[str, Any] = {"rope_type": kind, "factor": float(factor)}
    original = get("rope.scaling.original_context_length")
    if original:
        scaling["original_max_position_embeddings"] = int(original)
    return scaling


def _float32_value(value: float) -> float:
    """GGUF stores float32; return the shortest decimal that round-trips (9.99999974e-06 -> 1e-05)."""
    return float(str(np.float32(value)))
