"""Llama-family decoder (Llama, SmolLM, Qwen2, Mistral) over a flat batch of tokens with paged KV.

Weights come in HF naming; q/k/v and gate/up are fused into one matmul each at load time.
"""

from __future__ import annotations

from typing import Any

import torch

from vivace.engine.config import ModelConfig
from vivace.engine.models.blocks import DecoderModel, GatedMLP, PagedAttention, Weights
from vivace.engine.models.llama_stack import build_stack, stack_covers
from vivace.engine.models.registry import register_model


class LlamaLayer:
    """One decoder block: RMSNorm -> GQA attention -> residual -> RMSNorm -> SwiGLU -> residual."""

    def __init__(self, cfg: ModelConfig, weights: Weights, prefix: str, qk_norm: bool = False) -> None:
        """`qk_norm`: RMSNorm every query and key head (`self_attn.q_norm`, `self_attn.k_norm`; Qwen3)."""
        kernels = weights.kernels
        self.eps = cfg.rms_norm_eps
        norms = None
        if qk_norm:
            norms = (weights[prefix + "self_attn.q_norm.weight"], weights[prefix + "self_attn.k_norm.weight"])
        self.attn = PagedAttention(cfg, weights, prefix + "self_attn.", qk_norm=norms)
        self.mlp = GatedMLP(weights, prefix + "mlp.", kernels.silu_mul)
        self.input_norm = weights[prefix + "input_layernorm.weight"]
        self.post_norm = weights[prefix + "post_attention_layernorm.weight"]
        self.norm = kernels.rms_norm
        self.add_norm = kernels.add_rms_norm

    def __call__(
        self, hidden: torch.Tensor, rope: Any, rope_tables: Any, meta: Any, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> torch.Tensor:
        if self.add_norm is not None:
            out, residual = self.carry_residual(hidden, None, rope, rope_tables, meta, k_cache, v_cache)
            return residual + out
        attn_out = self.attn(self.norm(hidden, self.input_norm, self.eps), rope, rope_tables, meta, k_cache, v_cache)
        hidden = hidden + attn_out
        return hidden + self.mlp(self.norm(hidden, self.post_norm, self.eps))

    def carry_residual(
        self,
        out: torch.Tensor,
        residual: torch.Tensor | None,
        rope: Any,
        rope_tables: Any,
        meta: Any,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer with its residual adds left to the fused add-norms (kernels with `add_rms_norm`): takes
        the last layer's (output, residual stream) (None: `out` is the embeddings), returns its own; the
        hidden state is out + residual. The previous layer's add runs inside this one's input norm."""
        if self.add_norm is None:
            raise TypeError("carry_residual needs a kernel set with a fused add_rms_norm")
        if residual is None:
            x, residual = self.norm(out, self.input_norm, self.eps), out
        else:
            x, residual = self.add_norm(out, residual, self.input_norm, self.eps)
        attn_out = self.attn(x, rope, rope_tables, meta, k_cache, v_cache)
        x, residual = self.add_norm(attn_out, residual, self.post_norm, self.eps)
        return self.mlp(x), residual


@register_model("llama", "mistral", "qwen2")
class LlamaModel(DecoderModel):
    """Embeddings, Llama layers, final RMSNorm and LM head (tied to the embeddings where the config says).

    On the "cpu" kernels with every projection on GGUF blocks, the layers run as one compiled call per
    step (llama_stack.py), bitwise the same as calling them from Python."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stack = build_stack(self)

    def make_layer(self, weights: Weights, prefix: str) -> LlamaLayer:
        return LlamaLayer(self.cfg, weights, prefix)

    def run_layers(
        self, hidden: torch.Tensor, positions: torch.Tensor, meta: list[Any], kv_cache: torch.Tensor
    ) -> torch.Tensor:
        if self.stack is None or not stack_covers(meta, kv_cache):
            if self.kernels.add_rms_norm is None:
                return super().run_layers(hidden, positions, meta, kv_cache)
            # the residual stream is carried: each add runs inside the next norm (one kernel fewer per layer)
            rope_tables = self.rope.tables(positions)
            residual = None
            for layer, (g, j) in zip(self.layers, self.kv_slots, strict=True):
                hidden, residual = layer.carry_residual(
                    hidden, residual, self.rope, rope_tables, meta[g], kv_cache[j, 0], kv_cache[j, 1]
                )
            return hidden if residual is None else hidden + residual
        m = meta[0]
        return self.stack.forward(hidden, positions, kv_cache, m.slot_mapping, m.block_tables, m.spans)
