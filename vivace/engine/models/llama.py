"""Llama-family decoder (Llama, SmolLM, Qwen2, Mistral) over a flat batch of tokens with paged KV.

Weights come in HF naming; q/k/v and gate/up are fused into one matmul each at load time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from vivace.engine.attention.torch_backend import AttentionMetadata, paged_attention
from vivace.engine.config import ModelConfig
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.loaders.errors import CorruptModelError
from vivace.engine.models.linear import Linear, make_linear
from vivace.engine.models.rope import CompiledRotary, RotaryEmbedding


Norm = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
AddNorm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
Attention = Callable[..., torch.Tensor]


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension (the reference for the C++ op)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def torch_silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's silu(gate) * up over rows laid out [gate | up] (the reference for the C++ op)."""
    intermediate = gate_up.shape[-1] // 2
    return F.silu(gate_up[:, :intermediate]) * gate_up[:, intermediate:]


class LlamaLayer:
    """One decoder block: RMSNorm -> GQA attention -> residual -> RMSNorm -> SwiGLU -> residual."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], prefix: str, quantization: str, norm: Norm) -> None:
        def w(name: str) -> torch.Tensor:
            try:
                return weights[prefix + name]
            except KeyError:
                raise CorruptModelError(f"model weights lack tensor {prefix + name!r}") from None

        def b(name: str) -> torch.Tensor | None:
            return weights.get(prefix + name)

        self.cfg = cfg
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        qkv_w = torch.cat([w("self_attn.q_proj.weight"), w("self_attn.k_proj.weight"), w("self_attn.v_proj.weight")])
        biases = [b("self_attn.q_proj.bias"), b("self_attn.k_proj.bias"), b("self_attn.v_proj.bias")]
        qkv_b = torch.cat(biases) if all(x is not None for x in biases) else None
        self.qkv: Linear = make_linear(qkv_w, qkv_b, quantization)
        self.o_proj: Linear = make_linear(w("self_attn.o_proj.weight"), None, quantization)
        gate_up = torch.cat([w("mlp.gate_proj.weight"), w("mlp.up_proj.weight")])
        self.gate_up: Linear = make_linear(gate_up, None, quantization)
        self.down: Linear = make_linear(w("mlp.down_proj.weight"), None, quantization)
        self.norm = norm
        self.add_norm: AddNorm | None = None  # fused (x + residual, then norm), where a kernel has one
        self.silu_mul: Callable[[torch.Tensor], torch.Tensor] = torch_silu_mul
        self.input_norm = w("input_layernorm.weight")
        self.post_norm = w("post_attention_layernorm.weight")
        self.scale = cfg.head_dim**-0.5

    def __call__(
        self,
        hidden: torch.Tensor,
        rope: RotaryEmbedding,
        rope_tables: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        attention: Attention = paged_attention,
    ) -> torch.Tensor:
        cfg = self.cfg
        eps = cfg.rms_norm_eps
        num_tokens = hidden.shape[0]
        x = self.norm(hidden, self.input_norm, eps)
        qkv = self.qkv(x)
        heads_qk = cfg.num_heads + cfg.num_kv_heads
        qk = rope.apply(qkv[:, : self.q_size + self.kv_size].view(num_tokens, heads_qk, cfg.head_dim), rope_tables)
        q = qk[:, : cfg.num_heads]
        k = qk[:, cfg.num_heads :]
        v = qkv[:, self.q_size + self.kv_size :].view(num_tokens, cfg.num_kv_heads, cfg.head_dim)
        attn = attention(q, k, v, k_cache, v_cache, meta, self.scale)
        attn_out = self.o_proj(attn.reshape(num_tokens, self.q_size))
        if self.add_norm is None:
            hidden = hidden + attn_out
            x = self.norm(hidden, self.post_norm, eps)
        else:
            x, hidden = self.add_norm(attn_out, hidden, self.post_norm, eps)
        return hidden + self.down(self.silu_mul(self.gate_up(x)))


class LlamaModel:
    """Embeddings, decoder layers, final norm and LM head; stateless apart from its weights."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype, quantization: str = "none") -> None:
        self.cfg = cfg
        self.dtype = dtype
        weights = {k: v.to(dtype) for k, v in weights.items()}
        try:
            self.embed = weights["model.embed_tokens.weight"]
            self.norm = weights["model.norm.weight"]
        except KeyError as e:
            raise CorruptModelError(f"model weights lack tensor {e.args[0]!r}") from None
        head = weights.get("lm_head.weight")
        if head is None:
            if not cfg.tie_word_embeddings:
                raise CorruptModelError("model weights lack 'lm_head.weight' and embeddings are not tied")
            head = self.embed
        self.lm_head: Linear = make_linear(head, None, quantization)
        device = self.embed.device
        self.rms_norm: Norm = torch_rms_norm
        self.layers = [
            LlamaLayer(cfg, weights, f"model.layers.{i}.", quantization, self.rms_norm) for i in range(cfg.num_layers)
        ]
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling, dtype)
        if device.type != "cpu":  # the tables are indexed by positions on the model's device
            self.rope.cos, self.rope.signed_sin = self.rope.cos.to(device), self.rope.signed_sin.to(device)
        self.attention: Attention = paged_attention
        ops = load_cpu_ops() if device.type == "cpu" and dtype is torch.float32 else None
        if ops is not None:
            self._use_cpu_kernels(ops)

    def _use_cpu_kernels(self, ops: Any) -> None:
        """The compiled CPU ops: RMSNorm (fused with the residual add before it), rotary, SwiGLU.

        Each replaces several torch calls per layer whose dispatch cost rivals their arithmetic at batch one.
        """
        self.rms_norm = ops.rms_norm
        self.rope = CompiledRotary(self.rope, ops)
        for layer in self.layers:
            layer.norm = ops.rms_norm
            layer.add_norm = ops.add_rms_norm
            layer.silu_mul = ops.silu_mul

    def use_triton_kernels(self) -> None:
        """Swap in the Triton attention backend, rotary and (fused) RMSNorm kernels."""
        from vivace.engine.attention.triton_backend import triton_paged_attention
        from vivace.engine.attention.triton_norm import add_rms_norm, rms_norm
        from vivace.engine.attention.triton_rotary import TritonRotary

        self.attention = triton_paged_attention
        self.rope = TritonRotary(self.rope.cos, self.rope.signed_sin)
        self.rms_norm = rms_norm
        for layer in self.layers:
            layer.norm = rms_norm
            layer.add_norm = add_rms_norm

    def kv_bytes_per_token(self, kv_dtype: torch.dtype) -> int:
        """Bytes of K and V across all layers for one token."""
        elem = torch.finfo(kv_dtype).bits // 8
        return 2 * self.cfg.num_layers * self.cfg.num_kv_heads * self.cfg.head_dim * elem

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_cache: torch.Tensor,
    ) -> torch.Tensor:
        """Final hidden states [T, hidden] for a flat batch of tokens; kv_cache is [layers, 2, slots, KVH, D]."""
        hidden = F.embedding(input_ids, self.embed)
        rope_tables = self.rope.tables(positions)
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, self.rope, rope_tables, meta, kv_cache[i, 0], kv_cache[i, 1], self.attention)
        return self.rms_norm(hidden, self.norm, self.cfg.rms_norm_eps)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits [N, vocab] for selected final hidden states."""
        return self.lm_head(hidden).float()
