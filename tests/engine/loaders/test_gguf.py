"""GGUF loading: against transformers on the packaged model, per-type dequantization, and bad files."""

from __future__ import annotations

import os
import shutil

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from vivace.engine.kernels.block_quant import dequantize_blocks
from vivace.engine.loaders import load_model
from vivace.engine.loaders.errors import (
    CorruptModelError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from vivace.engine.loaders.gguf import load_gguf

# ---------------------------------------------------------------------------------------------
# The packaged model against transformers' own GGUF loader (the reference nobody here wrote).


@pytest.fixture(scope="module")
def hf_reference(smollm, smollm_path: str):
    """(config dict, state dict) as transformers' GGUF loader builds them (dequantize + reverse_permute)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = smollm.config
    # The skeleton only tells transformers which parameter names exist; meta tensors cost no memory.
    names = LlamaConfig(
        num_hidden_layers=cfg.num_layers,
        vocab_size=16,
        hidden_size=16,
        intermediate_size=16,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(names)
    parsed = load_gguf_checkpoint(smollm_path, return_tensors=True, model_to_load=skeleton)
    return parsed["config"], parsed["tensors"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.17.self_attn.q_proj.weight",
        "model.layers.29.self_attn.k_proj.weight",
        "model.layers.5.self_attn.v_proj.weight",
        "model.layers.5.self_attn.o_proj.weight",
        "model.layers.11.mlp.gate_proj.weight",
        "model.layers.11.mlp.up_proj.weight",
        "model.layers.11.mlp.down_proj.weight",
        "model.layers.3.input_layernorm.weight",
        "model.layers.3.post_attention_layernorm.weight",
    ],
)
def test_weights_match_transformers(smollm, hf_reference, name: str) -> None:
    _, reference = hf_reference
    ours = smollm.weights[name]
    assert ours.dtype == torch.float32
    assert ours.shape == reference[name].shape
    torch.testing.assert_close(ours, reference[name].float(), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_weight_names_match_transformers(smollm, hf_reference) -> None:
    _, reference = hf_reference
    assert set(smollm.weights) == set(reference)
    assert "lm_head.weight" not in smollm.weights  # tied to the embeddings


@pytest.mark.slow
def test_config_matches_transformers(smollm, hf_reference) -> None:
    reference, _ = hf_reference
    cfg = smollm.config
    assert cfg.architecture == reference["model_type"] == "llama"
    assert cfg.vocab_size == reference["vocab_size"]
    assert cfg.hidden_size == reference["hidden_size"]
    assert cfg.intermediate_size == reference["intermediate_size"]
    assert cfg.num_layers == reference["num_hidden_layers"]
    assert cfg.num_heads == reference["num_attention_heads"]
    assert cfg.num_kv_heads == reference["num_key_value_heads"]
    assert cfg.head_dim == reference["head_dim"]
    assert cfg.rms_norm_eps == pytest.approx(reference["rms_norm_eps"], rel=1e-6)
    assert cfg.rope_theta == pytest.approx(reference["rope_theta"])
    assert cfg.rope_scaling is None and "rope_scaling" not in reference
    assert cfg.max_position_embeddings == reference["max_position_embeddings"]
    assert cfg.tie_word_embeddings is reference["tie_word_embeddings"] is True
    assert cfg.attention_bias is False
    assert cfg.bos_token_id == reference["bos_token_id"]
    assert cfg.eos_token_ids == [reference["eos_token_id"]]


def test_default_model_loads_through_load_model(smollm) -> None:
    cfg = smollm.config
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == (576, 30, 9, 3)
    assert cfg.eos_token_ids == [2] and cfg.bos_token_id == 1  # <|im_end|>, <|im_start|>
    assert smollm.tokenizer.eos_token == "<|im_end|>"


def test_bfloat16_dtype(tiny_gguf) -> None:
    model = load_model(str(tiny_gguf()), dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in model.weights.values())


# ---------------------------------------------------------------------------------------------
# Dequantization per tensor type, on tiny files written here.

# Worst-case error of each type, as a fraction of the largest magnitude in the tensor.
QUANTIZABLE = {
    Q.F32: 0.0,
    Q.F16: 1e-3,
    Q.BF16: 8e-3,
    Q.Q8_0: 1 / 127,
    Q.Q5_0: 1 / 15,
    Q.Q5_1: 1 / 31,
    Q.Q4_0: 1 / 7,
    Q.Q4_1: 1 / 15,
}


@pytest.mark.parametrize("qtype", list(QUANTIZABLE), ids=lambda t: t.name)
def test_dequantize_close_to_original(tiny_gguf, tiny_weights, qtype: Q) -> None:
    model = load_gguf(str(tiny_gguf(matrix_type=qtype)))
    for layer in range(2):
        for gguf_name, hf_name in [
            (f"blk.{layer}.attn_q.weight", f"model.layers.{layer}.self_attn.q_proj.weight"),
            (f"blk.{layer}.attn_k.weight", f"model.layers.{layer}.self_attn.k_proj.weight"),
            (f"blk.{layer}.ffn_down.weight", f"model.layers.{layer}.mlp.down_proj.weight"),
        ]:
            original = tiny_weights[gguf_name]
            ours = model.weights[hf_name].numpy()
            assert ours.shape == original.shape
            bound = QUANTIZABLE[qtype] * np.abs(original).max() + 1e-7
            assert np.abs(ours - original).max() <= bound, (qtype.name, hf_name)
            assert np.corrcoef(ours.ravel(), original.ravel())[0, 1] > 0.97


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0], ids=lambda t: t.name)
def test_block_types_are_also_kept_as_stored_in_hf_row_order(tiny_gguf, qtype: Q) -> None:
    """The blocks the CPU kernel computes on dequantize to exactly the loaded weights (Q/K rows unpermuted alike)."""
    model = load_gguf(str(tiny_gguf(matrix_type=qtype)))
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ]:
        blocks = model.blocks[name]
        assert blocks.qtype == int(qtype) and blocks.shape == tuple(model.weights[name].shape)
        assert torch.equal(dequantize_blocks(blocks), model.weights[name])
    assert "model.layers.0.input_layernorm.weight" not in model.blocks  # vectors stay float only


def test_block_matrices_are_dequantized_only_when_read(tiny_gguf) -> None:
    """The "gguf" path computes on blocks: loading and building that model never dequantizes them."""
    from vivace.engine.config import EngineConfig
    from vivace.engine.kernels.select import select_kernels
    from vivace.engine.models.registry import build_model

    model = load_gguf(str(tiny_gguf(matrix_type=Q.Q4_1)))
    weights = model.weights
    name = "model.layers.0.mlp.down_proj.weight"
    assert name in weights and not weights.is_loaded(name)  # `in` and shapes do not load
    assert not any(weights.is_loaded(n) for n in model.blocks)
    kernels = select_kernels(EngineConfig(model="x", quantization="gguf"), model.config, torch.float32)
    build_model(model.config, weights, torch.float32, "gguf", kernels, model.blocks)
    assert not any(weights.is_loaded(n) for n in model.blocks)  # the embedding table too: rows dequantized on lookup
    assert torch.equal(weights[name], dequantize_blocks(model.blocks[name])) and weights.is_loaded(name)
    build_model(model.config, weights, torch.float32, "int8", kernels, model.blocks)
    assert all(weights.is_loaded(n) for n in model.blocks)  # int8 re-quantizes from the floats


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0], ids=lambda t: t.name)
def test_block_embedding_lookup_is_the_dequantized_tables_rows(tiny_gguf, qtype: Q) -> None:
    """On the "gguf" path embeddings are dequantized from the looked-up rows' blocks: bitwise the float table's rows."""
    from vivace.engine.config import EngineConfig
    from vivace.engine.kernels.select import select_kernels
    from vivace.engine.models.registry import build_model

    model = load_gguf(str(tiny_gguf(matrix_type=qtype)))
    kernels = select_kernels(EngineConfig(model="x", quantization="gguf"), model.config, torch.float32)
    built = build_model(model.config, model.weights, torch.float32, "gguf", kernels, model.blocks)
    ids = torch.tensor([0, 5, 3, 5, model.config.vocab_size - 1])
    table = model.weights["model.embed_tokens.weight"]  # read only now, by the test
    looked_up = built.embed_tokens(ids)
    assert looked_up.dtype == torch.float32 and torch.equal(looked_up, torch.nn.functional.embedding(ids, table))


def test_float_matrices_keep_no_blocks(tiny_gguf) -> None:
    assert load_gguf(str(tiny_gguf(matrix_type=Q.F16))).blocks == {}


# Byte offsets of the fp16 super-block scales in each K-quant block; the rest may be any bits.
K_QUANT_HALF_OFFSETS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def _random_k_blocks(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid random bytes of a K-quant tensor: random quants and sub-scales, finite small fp16 scales."""
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_values, block_bytes), dtype=np.uint8)
    for offset in K_QUANT_HALF_OFFSETS[qtype]:
        scales = rng.uniform(0.001, 0.05, size=blocks.shape[0]).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("qtype", list(K_QUANT_HALF_OFFSETS), ids=lambda t: t.name)
def test_k_quants_match_transformers_dequantizer(tiny_gguf, tiny_weights, qtype: Q) -> None:
    """numpy cannot quantize K-types, so random valid blocks are checked against transformers' torch dequantizer."""
    from transformers.integrations.gguf.dequant import dequantize as hf_dequantize

    rng = np.random.default_rng(1)
    up = _random_k_blocks(qtype, 512, 256, rng)
    down = _random_k_blocks(qtype, 256, 512, rng)
    path = tiny_gguf(raw={"blk.0.ffn_up.weight": (up, qtype), "blk.1.ffn_down.weight": (down, qtype)})
    model = load_gguf(str(path))
    for blocks, name, shape in [
        (up, "model.layers.0.mlp.up_proj.weight", (512, 256)),
        (down, "model.layers.1.mlp.down_proj.weight", (256, 512)),
    ]:
        expected = hf_dequantize(torch.from_numpy(blocks.reshape(-1).copy()), int(qtype)).reshape(shape)
        assert model.weights[name].shape == shape
        torch.testing.assert_close(model.weights[name], expected, rtol=1e-5, atol=1e-5)


def test_unsupported_tensor_type_is_named(tiny_gguf) -> None:
    blocks = np.random.default_rng(2).integers(0, 256, size=(512, 256 // 32 * 18), dtype=np.uint8)
    path = tiny_gguf(raw={"blk.0.ffn_up.weight": (blocks, Q.IQ4_NL)})
    with pytest.raises(UnsupportedModelError, match=r"IQ4_NL.*blk\.0\.ffn_up\.weight|blk\.0\.ffn_up\.weight.*IQ4_NL"):
        load_gguf(str(path))


# ---------------------------------------------------------------------------------------------
# Metadata mapping on tiny files.


def test_tiny_config_mapping(tiny_gguf) -> None:
    cfg = load_gguf(str(tiny_gguf())).config
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (256, 4, 2, 64)
    assert cfg.vocab_size == 260  # no llama.vocab_size key: the token list's length
    assert cfg.rope_theta == 500000.0 and cfg.rms_norm_eps == 1e-6
    assert cfg.max_position_embeddings == 512
    assert cfg.tie_word_embeddings is False  # output.weight present
    assert cfg.bos_token_id == 256
    assert cfg.eos_token_ids == [257, 258]  # eos then eot


def test_rope_freqs_become_freq_factors_scaling(tiny_gguf, tiny_weights) -> None:
    factors = np.linspace(1.0, 8.0, 32, dtype=np.float32)
    model = load_gguf(str(tiny_gguf(weights={**tiny_weights, "rope_freqs.weight": factors})))
    assert model.config.rope_scaling == {"rope_type": "freq_factors", "factors": pytest.approx(factors.tolist())}
    assert "rope_freqs" not in model.weights and "rope_freqs.weight" not in model.weights


def test_linear_rope_scaling(tiny_gguf) -> None:
    def scaling(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(4.0)

    cfg = load_gguf(str(tiny_gguf(extra_kv=scaling))).config
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 4.0}


def test_qwen2_is_not_unpermuted_and_keeps_biases(tiny_gguf, tiny_weights) -> None:
    rng = np.random.default_rng(3)
    biases = {
        "blk.0.attn_q.bias": rng.standard_normal(256).astype(np.float32),
        "blk.0.attn_k.bias": rng.standard_normal(128).astype(np.float32),
        "blk.0.attn_v.bias": rng.standard_normal(128).astype(np.float32),
        "blk.1.attn_q.bias": rng.standard_normal(256).astype(np.float32),
        "blk.1.attn_k.bias": rng.standard_normal(128).astype(np.float32),
        "blk.1.attn_v.bias": rng.standard_normal(128).astype(np.float32),
    }
    model = load_gguf(str(tiny_gguf(arch="qwen2", weights={**tiny_weights, **biases})))
    assert model.config.architecture == "qwen2" and model.config.attention_bias
    np.testing.assert_array_equal(
        model.weights["model.layers.0.self_attn.q_proj.weight"], tiny_weights["blk.0.attn_q.weight"]
    )
    np.testing.assert_array_equal(model.weights["model.layers.1.self_attn.k_proj.bias"], biases["blk.1.attn_k.bias"])


def test_llama_biases_are_unpermuted_like_weights(tiny_gguf, tiny_weights) -> None:
    """Q/K biases in a llama file are permuted by the converter too; they come back in HF order."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    bias = np.random.default_rng(4).standard_normal(256).astype(np.float32)
    stored = bias.reshape(4, 2, 32).swapaxes(1, 2).reshape(256)  # llama.cpp's permute, 4 heads
    reverse = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    assert np.array_equal(reverse.process(weights=stored, name="blk.0.attn_q.weight").weights, bias)
    extra = {f"blk.{i}.attn_{p}.bias": np.zeros(256 if p == "q" else 128, np.float32) for i in range(2) for p in "qkv"}
    extra["blk.0.attn_q.bias"] = stored
    model = load_gguf(str(tiny_gguf(weights={**tiny_weights, **extra})))
    assert model.config.attention_bias
    np.testing.assert_array_equal(model.weights["model.layers.0.self_attn.q_proj.bias"], bias)


# ---------------------------------------------------------------------------------------------
# Bad input: each failure is a specific exception, raised at load time, saying what is wrong.


def test_missing_path(tmp_path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match="nope.gguf") as info:
        load_model(str(missing))
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError):
        load_gguf(str(missing))


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(CorruptModelError, match="empty"):
        load_model(str(path))


def test_random_bytes(tmp_path) -> None:
    path = tmp_path / "noise.gguf"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptModelError, match="not a GGUF file"):
        load_model(str(path))


def test_garbage_after_magic(tmp_path) -> None:
    path = tmp_path / "bad-header.gguf"
    path.write_bytes(b"GGUF" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptModelError, match="bad-header.gguf"):
        load_model(str(path))


def test_truncated_copy_of_real_model(tmp_path, smollm_path: str) -> None:
    path = tmp_path / "truncated.gguf"
    with open(smollm_path, "rb") as source:
        path.write_bytes(source.read(1 << 20))
    with pytest.raises(CorruptModelError, match="truncated") as info:
        load_model(str(path))
    assert str(path) in str(info.value)


def test_truncated_tensor_data(tiny_gguf, tmp_path) -> None:
    source = tiny_gguf()
    path = tmp_path / "cut.gguf"
    shutil.copyfile(source, path)
    os.truncate(path, os.path.getsize(path) - 1000)
    with pytest.raises(CorruptModelError, match="truncated"):
        load_gguf(str(path))


def test_unsupported_architecture(tiny_gguf) -> None:
    with pytest.raises(UnsupportedModelError, match="'mamba'.*llama.*qwen2"):
        load_model(str(tiny_gguf(arch="mamba")))


def test_all_errors_share_a_base() -> None:
    for error in (CorruptModelError, UnsupportedModelError, ModelNotFoundError):
        assert issubclass(error, ModelLoadError)
