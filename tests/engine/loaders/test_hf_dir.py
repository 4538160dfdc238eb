"""HF-layout directories: config.json + sharded safetensors + tokenizer files, written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vivace.engine.loaders import load_model
from vivace.engine.loaders.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError
from vivace.engine.loaders.hf_dir import hf_model_config, load_hf_dir
from vivace.engine.loaders.types import LoadedModel

VOCAB = 49152  # the exported SmolLM2 tokenizer's
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def _config(**overrides: object) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": [2, 0],
    }
    config.update(overrides)
    return config


def _weights(config: dict, bias: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    h, ffn, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, q),
                p + "mlp.gate_proj.weight": (ffn, h),
                p + "mlp.up_proj.weight": (ffn, h),
                p + "mlp.down_proj.weight": (h, ffn),
            }
        )
        if bias:
            shapes.update(
                {
                    p + "self_attn.q_proj.bias": (q,),
                    p + "self_attn.k_proj.bias": (kv,),
                    p + "self_attn.v_proj.bias": (kv,),
                }
            )
    return {name: torch.randn(shape, generator=gen).to(torch.bfloat16) for name, shape in shapes.items()}


def _write_dir(
    path: Path,
    smollm: LoadedModel,
    config: dict,
    weights: dict[str, torch.Tensor],
    tokenizer_config: dict | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    names = sorted(weights)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: weights[k].contiguous() for k in keys}, str(path / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    smollm.tokenizer.backend.save(str(path / "tokenizer.json"))
    if tokenizer_config is None:
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|im_start|>",
            "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": True},
            "unk_token": "<|endoftext|>",
            "add_bos_token": False,
            "chat_template": TEMPLATE,
        }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


@pytest.fixture
def llama_dir(tmp_path: Path, smollm: LoadedModel) -> tuple[Path, dict, dict]:
    config = _config()
    weights = _weights(config)
    return _write_dir(tmp_path / "llama", smollm, config, weights), config, weights


def test_loads_config_weights_and_tokenizer(llama_dir, smollm: LoadedModel) -> None:
    path, raw, weights = llama_dir
    model = load_hf_dir(str(path), torch.float32)
    cfg = model.config
    assert cfg.architecture == "llama"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers) == (VOCAB, 64, 128, 2)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (4, 2, 16)
    assert (cfg.rms_norm_eps, cfg.rope_theta, cfg.rope_scaling) == (1e-5, 10000.0, None)
    assert cfg.max_position_embeddings == 1024
    assert cfg.tie_word_embeddings is False and cfg.attention_bias is False
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == [2, 0]
    assert set(model.weights) == set(weights)
    for name, tensor in weights.items():
        assert model.weights[name].dtype == torch.float32
        torch.testing.assert_close(model.weights[name], tensor.float(), rtol=0, atol=0)
    text = "Hi <|im_start|>there 🤖 123\n\n  x"
    assert model.tokenizer.encode(text) == smollm.tokenizer.encode(text)
    assert model.tokenizer.eos_token == "<|im_end|>" and model.tokenizer.eos_token_id == 2
    assert model.tokenizer.bos_token_id == 1
    assert model.tokenizer.chat_template == TEMPLATE


def test_matches_transformers_config_and_tokenizer(llama_dir) -> None:
    from transformers import AutoConfig, AutoTokenizer

    path, _, _ = llama_dir
    model = load_model(str(path), torch.float32)
    reference = AutoConfig.from_pretrained(str(path))
    cfg = model.config
    assert cfg.hidden_size == reference.hidden_size and cfg.num_layers == reference.num_hidden_layers
    assert cfg.num_kv_heads == reference.num_key_value_heads and cfg.head_dim == reference.head_dim
    assert cfg.rope_theta == reference.rope_parameters["rope_theta"]
    assert cfg.attention_bias == reference.attention_bias
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    for text in ["", "hello world", "<|im_start|>user\nhé 日本<|im_end|>", "  9 lives\t\n"]:
        ids = model.tokenizer.encode(text)
        assert ids == tokenizer.encode(text)
        assert model.tokenizer.decode(ids) == tokenizer.decode(ids, skip_special_tokens=True)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert model.tokenizer.apply_chat_template(messages, add_generation_prompt=False) == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=False
    )


def test_bfloat16_stays_bfloat16(llama_dir) -> None:
    path, _, weights = llama_dir
    model = load_hf_dir(str(path), torch.bfloat16)
    assert torch.equal(model.weights["model.norm.weight"], weights["model.norm.weight"])


def test_qwen2_tied_with_bias_and_rope_scaling(tmp_path: Path, smollm: LoadedModel) -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = _config(model_type="qwen2", tie_word_embeddings=True, rope_scaling=scaling, eos_token_id=2)
    config.pop("head_dim")
    weights = _weights(config | {"head_dim": 16}, bias=True)
    weights.pop("lm_head.weight")
    model = load_hf_dir(str(_write_dir(tmp_path / "qwen", smollm, config, weights)), torch.float32)
    cfg = model.config
    assert cfg.architecture == "qwen2" and cfg.attention_bias and cfg.tie_word_embeddings
    assert cfg.head_dim == 16  # hidden / heads
    assert cfg.rope_scaling == scaling and cfg.eos_token_ids == [2]
    assert "lm_head.weight" not in model.weights and "model.layers.1.self_attn.k_proj.bias" in model.weights


def test_transformers5_rope_parameters(tmp_path: Path, smollm: LoadedModel) -> None:
    config = _config(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0})
    config.pop("rope_theta")
    model = load_hf_dir(str(_write_dir(tmp_path / "m", smollm, config, _weights(config))), torch.float32)
    assert model.config.rope_theta == 50000.0
    assert model.config.rope_scaling == {"rope_type": "linear", "factor": 2.0}


def test_chat_template_file_wins_and_bos_is_added(tmp_path: Path, smollm: LoadedModel) -> None:
    config = _config()
    path = _write_dir(
        tmp_path / "m",
        smollm,
        config,
        _weights(config),
        tokenizer_config={
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "add_bos_token": True,
            "chat_template": "unused",
        },
    )
    (path / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0].content }}")
    tokenizer = load_hf_dir(str(path), torch.float32).tokenizer
    assert tokenizer.apply_chat_template([{"role": "user", "content": "x"}]) == "<|im_start|>x"
    assert tokenizer.encode("hello")[0] == 1
    assert tokenizer.encode("hello", add_special_tokens=False) == smollm.tokenizer.encode("hello")


def test_list_form_chat_template(tmp_path: Path, smollm: LoadedModel) -> None:
    config = _config()
    path = _write_dir(
        tmp_path / "m",
        smollm,
        config,
        _weights(config),
        tokenizer_config={
            "eos_token": "<|im_end|>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
        },
    )
    assert load_hf_dir(str(path), torch.float32).tokenizer.chat_template == "D"


# ---------------------------------------------------------------------------------------------
# Bad directories.


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_hf_dir(str(tmp_path / "absent"), torch.float32)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path), torch.float32)


def test_unsupported_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_config(model_type="mamba")))
    with pytest.raises(UnsupportedModelError, match="'mamba'.*llama.*qwen2"):
        load_hf_dir(str(tmp_path), torch.float32)


def test_missing_config_key(tmp_path: Path) -> None:
    config = _config()
    config.pop("hidden_size")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptModelError, match="hidden_size"):
        load_hf_dir(str(tmp_path), torch.float32)


def test_no_safetensors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_config()))
    with pytest.raises(ModelNotFoundError, match="safetensors"):
        load_hf_dir(str(tmp_path), torch.float32)


def test_corrupt_safetensors(llama_dir) -> None:
    path, _, _ = llama_dir
    (path / "model-00002-of-00002.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(CorruptModelError, match="model-00002-of-00002.safetensors"):
        load_hf_dir(str(path), torch.float32)


def test_missing_weight(llama_dir, smollm: LoadedModel) -> None:
    path, config, weights = llama_dir
    weights = dict(weights)
    del weights["model.layers.1.mlp.up_proj.weight"]
    for shard in path.glob("*.safetensors"):
        shard.unlink()
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(CorruptModelError, match=r"model\.layers\.1\.mlp\.up_proj\.weight is missing"):
        load_hf_dir(str(path), torch.float32)


def test_wrong_shape(tmp_path: Path, smollm: LoadedModel) -> None:
    config = _config()
    weights = _weights(config)
    weights["model.layers.0.self_attn.k_proj.weight"] = weights["model.layers.0.self_attn.q_proj.weight"].clone()
    path = _write_dir(tmp_path / "m", smollm, config, weights)
    with pytest.raises(CorruptModelError, match=r"k_proj\.weight has shape \(64, 64\), config implies \(32, 64\)"):
        load_hf_dir(str(path), torch.float32)


GEMMA3_BASE = {
    "model_type": "gemma3_text",
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 7,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "sliding_window": 512,
    "query_pre_attn_scalar": 256,
}


def test_gemma3_transformers4_keys() -> None:
    """transformers 4 wrote `sliding_window_pattern` and `rope_local_base_freq` (no layer_types)."""
    raw = {**GEMMA3_BASE, "sliding_window_pattern": 6, "rope_theta": 1e6, "rope_local_base_freq": 1e4}
    cfg = hf_model_config(raw, "gemma")
    assert [cfg.layer_window(i) for i in range(7)] == [512] * 5 + [None, 512]
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.query_pre_attn_scalar) == (1e6, 1e4, 256)


def test_gemma3_transformers5_keys() -> None:
    """transformers 5 writes `layer_types` and `rope_parameters` per layer type."""
    raw = {
        **GEMMA3_BASE,
        "layer_types": ["full_attention"] + ["sliding_attention"] * 6,
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    }
    cfg = hf_model_config(raw, "gemma")
    assert [cfg.layer_window(i) for i in range(7)] == [None] + [512] * 6
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 8.0}  # the global layers' only
    assert (cfg.rope_theta, cfg.rope_local_theta) == (1e6, 1e4)


def test_gemma2_attention_softcapping_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="attn_logit_softcapping"):
        hf_model_config({**GEMMA3_BASE, "attn_logit_softcapping": 50.0}, "gemma")
