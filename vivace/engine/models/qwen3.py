"""Qwen3 (dense): Llama's layer with an RMSNorm on every query and key head before RoPE, no q/k/v bias."""

from __future__ import annotations

from vivace.engine.config import ModelConfig
from vivace.engine.models.blocks import DecoderModel, Weights
from vivace.engine.models.llama import LlamaLayer
from vivace.engine.models.registry import register_model


@register_model("qwen3")
class Qwen3Model(DecoderModel):
    """Embeddings, Llama layers with QK-norm, final RMSNorm and LM head."""

    @classmethod
    def weight_shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Llama's weights plus the per-head q/k norms."""
        shapes = super().weight_shapes(config)
        for i in range(config.num_layers):
            shapes[f"model.layers.{i}.self_attn.q_norm.weight"] = (config.head_dim,)
            shapes[f"model.layers.{i}.self_attn.k_norm.weight"] = (config.head_dim,)
        return shapes

    def make_layer(self, weights: Weights, prefix: str) -> LlamaLayer:
        return LlamaLayer(self.cfg, weights, prefix, qk_norm=True)
