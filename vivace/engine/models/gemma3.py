"""Gemma 3 (text): interleaved sliding-window (local) and global layers, multi-query attention.

Embeddings scaled by sqrt(hidden); four RMSNorms per layer (before and after attention and the
feed-forward), each scaling by (1 + w); RMSNorm on every query and key head; GeGLU with tanh GELU;
local layers attend over a sliding window with their own RoPE base; final logits soft-capped when
the config says. Weights in HF naming (`pre_feedforward_layernorm`, `self_attn.q_norm`, ...).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vivace.engine.config import ModelConfig
from vivace.engine.models.blocks import DecoderModel, GatedMLP, PagedAttention, Weights
from vivace.engine.models.registry import register_model
from vivace.engine.models.rope import RotaryEmbedding

_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")


def gemma_norm_weight(weights: Weights, name: str) -> torch.Tensor:
    """Gemma's RMSNorm scales by (1 + w): folded into the weight once, so the plain RMSNorm kernels apply."""
    return (weights[name].float() + 1.0).to(weights[name].dtype)


class Gemma3Layer:
    """norm -> attention (QK-norm, local or global) -> norm -> residual; norm -> GeGLU -> norm -> residual."""

    def __init__(self, cfg: ModelConfig, weights: Weights, prefix: str, window: int | None) -> None:
        kernels = weights.kernels
        self.eps = cfg.rms_norm_eps
        self.window = window
        scale = (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5
        qk_norm = (
            gemma_norm_weight(weights, prefix + "self_attn.q_norm.weight"),
            gemma_norm_weight(weights, prefix + "self_attn.k_norm.weight"),
        )
        self.attn = PagedAttention(cfg, weights, prefix + "self_attn.", scale=scale, qk_norm=qk_norm, window=window)
        self.mlp = GatedMLP(weights, prefix + "mlp.", kernels.gelu_tanh_mul)
        self.input_norm, self.post_attn_norm, self.pre_ffn_norm, self.post_ffn_norm = (
            gemma_norm_weight(weights, prefix + name + ".weight") for name in _NORMS
        )
        self.norm = kernels.rms_norm

    def __call__(
        self, hidden: torch.Tensor, rope: Any, rope_tables: Any, meta: Any, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> torch.Tensor:
        attn = self.attn(self.norm(hidden, self.input_norm, self.eps), rope, rope_tables, meta, k_cache, v_cache)
        hidden = hidden + self.norm(attn, self.post_attn_norm, self.eps)
        mlp = self.mlp(self.norm(hidden, self.pre_ffn_norm, self.eps))
        return hidden + self.norm(mlp, self.post_ffn_norm, self.eps)


@register_model("gemma3", "gemma3_text")
class Gemma3Model(DecoderModel):
    """Scaled embeddings, Gemma 3 layers (global ones on `rope`, local ones on `local_rope`), final norm, tied head."""

    def __init__(self, cfg: ModelConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.norm = (self.norm.float() + 1.0).to(self.norm.dtype)
        # HF multiplies by the normalizer cast to the weights' dtype.
        self.embed_scale = torch.tensor(math.sqrt(cfg.hidden_size), dtype=self.dtype).item()
        local = RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_local_theta or cfg.rope_theta, None, self.dtype
        )
        if self.device.type != "cpu":
            local.cos, local.signed_sin = local.cos.to(self.device), local.signed_sin.to(self.device)
        self.local_rope = self.kernels.rotary(local)

    @classmethod
    def weight_shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Llama's weights plus the pre/post feed-forward norms and the per-head q/k norms."""
        shapes = super().weight_shapes(config)
        for i in range(config.num_layers):
            prefix = f"model.layers.{i}."
            shapes[prefix + "pre_feedforward_layernorm.weight"] = (config.hidden_size,)
            shapes[prefix + "post_feedforward_layernorm.weight"] = (config.hidden_size,)
            shapes[prefix + "self_attn.q_norm.weight"] = (config.head_dim,)
            shapes[prefix + "self_attn.k_norm.weight"] = (config.head_dim,)
        return shapes

    def make_layer(self, weights: Weights, prefix: str) -> Gemma3Layer:
        index = int(prefix.split(".")[2])
        return Gemma3Layer(self.cfg, weights, prefix, self.cfg.layer_window(index))

    def layer_windows(self) -> list[int | None]:
        return [self.cfg.layer_window(i) for i in range(self.cfg.num_layers)]

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().embed_tokens(input_ids) * self.embed_scale

    def run_layers(
        self, hidden: torch.Tensor, positions: torch.Tensor, meta: list[Any], kv_cache: torch.Tensor
    ) -> torch.Tensor:
        """As DecoderModel.run_layers, with each layer rotated by its own (local or global) RoPE."""
        tables = {False: self.rope.tables(positions), True: self.local_rope.tables(positions)}
        for layer, (g, j) in zip(self.layers, self.kv_slots, strict=True):
            local = layer.window is not None
            rope = self.local_rope if local else self.rope
            hidden = layer(hidden, rope, tables[local], meta[g], kv_cache[j, 0], kv_cache[j, 1])
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().compute_logits(hidden)
        cap = self.cfg.final_logit_softcapping
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
