"""Load an HF-layout directory: config.json + (sharded) *.safetensors + tokenizer.json."""

from __future__ import annotations

import glob
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from vivace.engine.config import ModelConfig
from vivace.engine.loaders.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError
from vivace.engine.loaders.json_file import read_json_object
from vivace.engine.loaders.tokenizer_builders import tokenizer_from_hf_dir
from vivace.engine.loaders.types import LoadedModel, check_weight_shapes
from vivace.engine.models.registry import supported_architectures


def load_hf_dir(path: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Read config, all safetensors shards (cast to `dtype`) and the tokenizer from directory `path`."""
    if not os.path.isdir(path):
        raise ModelNotFoundError(f"model directory {path} does not exist")
    raw = _read_config(path)
    config = hf_model_config(raw, path)
    weights = _read_safetensors(path, dtype)
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    check_weight_shapes(config, weights, path)
    tokenizer = tokenizer_from_hf_dir(path)
    if tokenizer.bos_token_id is not None and config.bos_token_id is None:
        config.bos_token_id = tokenizer.bos_token_id
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in config.eos_token_ids:
        config.eos_token_ids.append(tokenizer.eos_token_id)
    return LoadedModel(config=config, weights=weights, tokenizer=tokenizer)


def hf_model_config(raw: dict[str, Any], path: str) -> ModelConfig:
    """Map an HF config.json (of any model_type the model registry serves) to a ModelConfig."""
    model_type = raw.get("model_type")
    supported = supported_architectures()
    if model_type not in supported:
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} is not supported; supported: {', '.join(supported)}"
        )
    if raw.get("attn_logit_softcapping"):
        raise UnsupportedModelError(f"{path}: attn_logit_softcapping (Gemma 2) is not supported")
    try:
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        rope_theta, rope_scaling, rope_local_theta = _rope(raw)
        eos = raw.get("eos_token_id")
        num_layers = int(raw["num_hidden_layers"])
        layer_types = _layer_types(raw, num_layers)
        sliding = "sliding_attention" in layer_types
        return ModelConfig(
            architecture=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=num_layers,
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", model_type == "qwen2")),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=list(eos) if isinstance(eos, list) else ([] if eos is None else [int(eos)]),
            layer_types=layer_types if sliding else [],
            sliding_window=int(raw["sliding_window"]) if sliding else None,
            rope_local_theta=rope_local_theta,
            query_pre_attn_scalar=raw.get("query_pre_attn_scalar"),
            final_logit_softcapping=raw.get("final_logit_softcapping"),
        )
    except KeyError as exc:
        raise CorruptModelError(f"{path}/config.json is missing required key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise CorruptModelError(f"{path}/config.json has a malformed value: {exc}") from exc


def _rope(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None, float | None]:
    """(rope_theta, rope_scaling, sliding layers' rope_theta) from the classic keys or transformers 5's
    `rope_parameters` (flat, or per layer type as Gemma 3 has it)."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get("full_attention"), dict):
        theta, scaling, _ = _rope({"rope_parameters": params["full_attention"]})
        local = params.get("sliding_attention") or {}
        return theta, scaling, float(local["rope_theta"]) if "rope_theta" in local else None
    local_theta = raw.get("rope_local_base_freq")  # transformers 4's Gemma 3 key
    local_theta = None if local_theta is None else float(local_theta)
    if isinstance(params, dict):
        theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        return theta, None if scaling.get("rope_type", "default") == "default" else scaling, local_theta
    scaling = raw.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return float(raw.get("rope_theta", 10000.0)), scaling, local_theta


def _layer_types(raw: dict[str, Any], num_layers: int) -> list[str]:
    """Each layer's attention kind: `layer_types`, else Gemma 3's `sliding_window_pattern` (every Nth global)."""
    types = raw.get("layer_types")
    if isinstance(types, list):
        if len(types) != num_layers:
            raise ValueError(f"layer_types has {len(types)} entries for {num_layers} layers")
        return [str(t) for t in types]
    pattern = raw.get("sliding_window_pattern") if raw.get("model_type") == "gemma3_text" else None
    if pattern and raw.get("sliding_window"):
        return ["full_attention" if (i + 1) % int(pattern) == 0 else "sliding_attention" for i in range(num_layers)]
    return []


def _read_config(path: str) -> dict[str, Any]:
    """The parsed config.json of directory `path`."""
    config_path = os.path.join(path, "config.json")
    raw = read_json_object(config_path)
    if raw is None:
        raise ModelNotFoundError(f"{path} has no config.json; is it an HF model directory?")
    return raw


def _read_safetensors(path: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor from every *.safetensors file in `path`, cast to `dtype`."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ModelNotFoundError(f"{path} has no *.safetensors files (.bin checkpoints are not supported)")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as shard:
                for name in shard.keys():
                    if not name.endswith("rotary_emb.inv_freq"):  # a buffer old checkpoints saved; recomputed
                        weights[name] = shard.get_tensor(name).to(dtype)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CorruptModelError(f"{file} is not a valid safetensors file: {exc}") from exc
    return weights
