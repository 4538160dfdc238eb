"""What every loader returns: the model's shape, its weights under HF names, and its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vivace.engine.config import ModelConfig
from vivace.engine.loaders.errors import CorruptModelError
from vivace.engine.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """A model ready to build: weights use HF transformers names (`model.layers.0.self_attn.q_proj.weight`)."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer


def expected_weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight a Llama-family model of this config needs (biases and lm_head only when configured)."""
    hidden, q_dim, kv_dim = config.hidden_size, config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config.vocab_size, hidden),
        "model.norm.weight": (hidden,),
    }
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, hidden)
    for i in range(config.num_layers):
        prefix = f"model.layers.{i}."
        shapes.update({
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "self_attn.q_proj.weight": (q_dim, hidden),
            prefix + "self_attn.k_proj.weight": (kv_dim, hidden),
            prefix + "self_attn.v_proj.weight": (kv_dim, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, q_dim),
            prefix + "mlp.gate_proj.weight": (config.intermediate_size, hidden),
            prefix + "mlp.up_proj.weight": (config.intermediate_size, hidden),
            prefix + "mlp.down_proj.weight": (hidden, config.intermediate_size),
        })
        if config.attention_bias:
            shapes.update({
                prefix + "self_attn.q_proj.bias": (q_dim,),
                prefix + "self_attn.k_proj.bias": (kv_dim,),
                prefix + "self_attn.v_proj.bias": (kv_dim,),
            })
    return shapes


def check_weight_shapes(config: ModelConfig, weights: dict[str, torch.Tensor], source: str) -> None:
    """Raise CorruptModelError naming the first missing or mis-shaped weight."""
    for name, shape in expected_weight_shapes(config).items():
        if name not in weights:
            raise CorruptModelError(f"{source}: weight {name} is missing")
        if tuple(weights[name].shape) != shape:
            raise CorruptModelError(
                f"{source}: weight {name} has shape {tuple(weights[name].shape)}, config implies {shape}"
            )
