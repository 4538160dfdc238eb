"""Shared building blocks of decoder models: weight lookup, attention with rope over the paged cache,
gated MLP, and the decoder skeleton (embeddings, layers, final norm, LM head).

A model family subclasses `DecoderModel` and builds its layers from these; the kernels (attention
backend, norms, rotary, activation) arrive at construction and are never patched in afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from vivace.engine.attention.kv_quant import cache_row_bytes, key_channel_scale, key_rotation
from vivace.engine.config import ModelConfig
from vivace.engine.kernels.block_quant import BLOCK, Q8_0, QuantBlocks, dequantize_blocks, quantize_q8_0
from vivace.engine.kernels.select import Kernels
from vivace.engine.kv_groups import kv_layout, single_group
from vivace.engine.loaders.errors import CorruptModelError
from vivace.engine.lora.manager import LoRAManager
from vivace.engine.models.linear import BlockQuantLinear, Linear, make_linear
from vivace.engine.models.rope import RotaryEmbedding


def embed_rows(
    table: torch.Tensor | QuantBlocks | BlockQuantLinear, input_ids: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The embedding rows of `input_ids` [T] as [T, hidden]: looked up in a float table, or dequantized from
    the looked-up rows of a block table or of a tied head's blocks (bitwise the rows of the table
    dequantized whole)."""
    if isinstance(table, QuantBlocks):
        return dequantize_blocks(QuantBlocks(table.data[input_ids], table.qtype)).to(dtype)
    if isinstance(table, BlockQuantLinear):
        return dequantize_blocks(table.rows(input_ids)).to(dtype)
    return F.embedding(input_ids, table)


class Weights:
    """A model's tensors by HF name, in the model's dtype; a missing one is a CorruptModelError naming it.

    `blocks`: a GGUF's quantized matrices as stored, by the same names (used when quantization is "gguf").
    `lora`: when given, the projections LoRA may target get adapter slots from it.
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        dtype: torch.dtype,
        quantization: str,
        kernels: Kernels,
        blocks: dict[str, QuantBlocks] | None = None,
        lora: LoRAManager | None = None,
    ) -> None:
        self.dtype = dtype
        self._source = tensors  # read (and converted) only when a layer needs the float weight
        self.tensors: dict[str, torch.Tensor] = {}
        self.quantization = quantization
        self.kernels = kernels
        self.blocks = blocks or {}
        self.lora = lora

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            if name not in self._source:
                raise CorruptModelError(f"model weights lack tensor {name!r}")
            self.tensors[name] = self._source[name].to(self.dtype)
        return self.tensors[name]

    def has(self, name: str) -> bool:
        return name in self.tensors or name in self._source

    def get(self, name: str) -> torch.Tensor | None:
        return self[name] if self.has(name) else None

    def embedding(self, name: str) -> torch.Tensor | QuantBlocks:
        """The token embedding table: on the "gguf" path its blocks as stored (rows are dequantized as they
        are looked up, see `embed_rows`), else the float tensor. A large vocabulary's table in float32 is
        most of a small model's memory and of its load time (Gemma 3's 262k x 640: 671 MB)."""
        if self.quantization == "gguf" and name in self.blocks:
            return self.blocks[name]
        return self[name]

    def linear(self, names: list[str], bias: bool = False) -> Linear:
        """One linear layer over the named weights stacked by output rows (fused q/k/v, gate/up).

        A layer computed on GGUF blocks never reads the float weights (they stay undequantized)."""
        weight_names = [name + ".weight" for name in names]
        biases = [self.get(name + ".bias") for name in names] if bias else []
        b = torch.cat(biases) if biases and all(x is not None for x in biases) else None  # type: ignore[arg-type]
        blocks = self._blocks(weight_names)
        if blocks is not None:
            layer = make_linear(None, b, self.quantization, self.kernels.int8_ops, blocks, self.kernels.block_linear)
            shapes = [self.blocks[name].shape for name in weight_names]
        else:
            parts = [self[name] for name in weight_names]
            layer = self.make(torch.cat(parts) if len(parts) > 1 else parts[0], b, weight_names)
            shapes = [tuple(p.shape) for p in parts]
        if self.lora is None:
            return layer
        return self.lora.wrap(layer, names, shapes[0][1], [shape[0] for shape in shapes])

    def _blocks(self, names: list[str]) -> QuantBlocks | None:
        """The named weights' GGUF blocks stacked, when this model (a GGUF's) computes on blocks.

        A matrix stored in a type the block kernel does not take (Q5_0, Q4_K, Q6_K, ..., or float) is
        re-quantized to Q8_0 blocks from its float values, as llama.cpp's Q8_0 would store it."""
        if self.quantization != "gguf" or not self.blocks:
            return None
        parts = [self.blocks.get(name) or self._requantized(name) for name in names]
        if any(p is None for p in parts):
            return None
        if len({p.qtype for p in parts}) > 1:  # fused parts stored in different types: all in Q8_0
            parts = [p if p.qtype == Q8_0 else quantize_q8_0(dequantize_blocks(p)) for p in parts]
        return QuantBlocks.cat(parts)  # type: ignore[arg-type]

    def _requantized(self, name: str) -> QuantBlocks | None:
        if not self.has(name):
            return None
        weight = self[name]
        if weight.ndim != 2 or weight.shape[1] % BLOCK:
            return None
        self.blocks[name] = quantize_q8_0(weight)
        return self.blocks[name]

    def make(self, weight: torch.Tensor, bias: torch.Tensor | None, names: list[str]) -> Linear:
        """A linear layer over `weight` in this model's format; `names`: its tensors, whose GGUF blocks it may use."""
        blocks = self._blocks(names)
        return make_linear(weight, bias, self.quantization, self.kernels.int8_ops, blocks, self.kernels.block_linear)


class PagedAttention:
    """q/k/v projection (fused), optional per-head q/k RMSNorm, rotary on q and k, paged attention
    through the backend (over the whole context, or the last `window` keys), output projection."""

    def __init__(
        self,
        cfg: ModelConfig,
        weights: Weights,
        prefix: str,
        scale: float | None = None,
        qk_norm: tuple[torch.Tensor, torch.Tensor] | None = None,
        window: int | None = None,
    ) -> None:
        """`qk_norm`: (q_norm, k_norm) weights over head_dim as the kernels' rms_norm takes them (Qwen3, Gemma 3)."""
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv = weights.linear([prefix + "q_proj", prefix + "k_proj", prefix + "v_proj"], bias=True)
        self.o_proj = weights.linear([prefix + "o_proj"])
        self.backend = weights.kernels.attention
        self.scale = cfg.head_dim**-0.5 if scale is None else scale
        self.qk_norm = qk_norm
        self.norm = weights.kernels.rms_norm
        self.eps = cfg.rms_norm_eps
        self.window = window
        # int8 caches: (queries, keys) are attended as (q / a) R and stored as (k * a) R (kv_quant.py)
        self.key_scale = key_channel_scale(*qk_norm) if qk_norm is not None and cfg.head_dim % 2 == 0 else None
        self._int8_maps: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def int8_maps(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The [head_dim, head_dim] matrices queries and keys go through for an int8 cache: diag(1/a) R, diag(a) R."""
        if self.key_scale is None:  # the rotation alone, one matrix (cached) shared by every layer
            rot = key_rotation(self.head_dim, device, dtype)
            return rot, rot
        maps = self._int8_maps.get((device, dtype))
        if maps is None:
            rot = key_rotation(self.head_dim, device, torch.float64)
            a = self.key_scale.to(device=device, dtype=torch.float64)
            maps = self._int8_maps[(device, dtype)] = ((rot / a[:, None]).to(dtype), (rot * a[:, None]).to(dtype))
        return maps

    def __call__(
        self, x: torch.Tensor, rope: Any, rope_tables: Any, meta: Any, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> torch.Tensor:
        num_tokens = x.shape[0]
        qkv = self.qkv(x)
        qk_end = self.q_size + self.kv_size
        qk = qkv[:, :qk_end].view(num_tokens, self.num_heads + self.num_kv_heads, self.head_dim)
        if self.qk_norm is not None:
            q_weight, k_weight = self.qk_norm
            q = self.norm(qkv[:, : self.q_size].reshape(-1, self.head_dim), q_weight, self.eps)
            k = self.norm(qkv[:, self.q_size : qk_end].reshape(-1, self.head_dim), k_weight, self.eps)
            qk = torch.cat([q.view(num_tokens, -1), k.view(num_tokens, -1)], dim=1).view(qk.shape)
        v = qkv[:, qk_end:].view(num_tokens, self.num_kv_heads, self.head_dim)
        if k_cache.dtype == torch.int8:  # keys are cached scaled and rotated (kv_quant.py); scores unchanged
            qk = rope.apply(qk, rope_tables)
            q_map, k_map = self.int8_maps(qk.device, qk.dtype)
            q, k = qk[:, : self.num_heads] @ q_map, qk[:, self.num_heads :] @ k_map
            attn = self.backend.forward(q, k, v, k_cache, v_cache, meta, self.scale, self.window)
        else:
            attn = self.backend.rotate_and_attend(
                qk, v, rope, rope_tables, k_cache, v_cache, meta, self.scale, self.window
            )
        return self.o_proj(attn.reshape(num_tokens, self.q_size))


class GatedMLP:
    """down(act(gate(x)) * up(x)), gate and up fused into one matmul; `act_mul` is the kernels' (silu_mul, gelu_tanh_mul)."""

    def __init__(self, weights: Weights, prefix: str, act_mul: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.gate_up = weights.linear([prefix + "gate_proj", prefix + "up_proj"])
        self.down = weights.linear([prefix + "down_proj"])
        self.act_mul = act_mul

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act_mul(self.gate_up(x)))


class DecoderModel:
    """Embeddings, decoder layers (built by `make_layer`), final norm and LM head; stateless apart from weights.

    A layer is called as layer(hidden, rope, rope_tables, meta, k_cache, v_cache) -> hidden, with its
    KV group's attention metadata and its KV tensor (`kv_layout`, kv_groups.py).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        tensors: dict[str, torch.Tensor],
        dtype: torch.dtype,
        quantization: str,
        kernels: Kernels,
        blocks: dict[str, QuantBlocks] | None = None,
        lora: LoRAManager | None = None,
        hybrid_kv: bool = True,
    ) -> None:
        """`lora`: adapter slots for the q/k/v/o/gate/up/down projections (None = no LoRA); `hybrid_kv`
        False: one KV group for every layer, so sliding-window layers keep the whole context's KV."""
        self.cfg = cfg
        self.dtype = dtype
        self.kernels = kernels
        self.lora = lora
        weights = Weights(tensors, dtype, quantization, kernels, blocks, lora)
        self.embed = weights.embedding("model.embed_tokens.weight")
        self.device = self.embed.data.device if isinstance(self.embed, QuantBlocks) else self.embed.device
        self.norm = weights["model.norm.weight"]
        head_name = "lm_head.weight"
        if not weights.has(head_name):
            if not cfg.tie_word_embeddings:
                raise CorruptModelError("model weights lack 'lm_head.weight' and embeddings are not tied")
            head_name = "model.embed_tokens.weight"
        self.lm_head: Linear = weights.linear([head_name.removesuffix(".weight")])
        if head_name == "model.embed_tokens.weight" and isinstance(self.lm_head, BlockQuantLinear):
            self.embed = self.lm_head  # tied blocks: lookups read the head's copy (its kernel's layout), no second one
        self.layers = [self.make_layer(weights, f"model.layers.{i}.") for i in range(cfg.num_layers)]
        self.kv_layout = kv_layout(self.layer_windows()) if hybrid_kv else single_group(cfg.num_layers)
        self.kv_slots = self.kv_layout.layer_slots(cfg.num_layers)  # layer -> (KV group, KV tensor)
        rope = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling, dtype)
        if self.device.type != "cpu":  # the tables are indexed by positions on the model's device
            rope.cos, rope.signed_sin = rope.cos.to(self.device), rope.signed_sin.to(self.device)
        self.rope = kernels.rotary(rope)

    @classmethod
    def weight_shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Every weight a model of this config needs (Llama's layout; biases and lm_head only when configured)."""
        hidden, q_dim, kv_dim = (
            config.hidden_size,
            config.num_heads * config.head_dim,
            config.num_kv_heads * config.head_dim,
        )
        shapes: dict[str, tuple[int, ...]] = {
            "model.embed_tokens.weight": (config.vocab_size, hidden),
            "model.norm.weight": (hidden,),
        }
        if not config.tie_word_embeddings:
            shapes["lm_head.weight"] = (config.vocab_size, hidden)
        for i in range(config.num_layers):
            prefix = f"model.layers.{i}."
            shapes.update(
                {
                    prefix + "input_layernorm.weight": (hidden,),
                    prefix + "post_attention_layernorm.weight": (hidden,),
                    prefix + "self_attn.q_proj.weight": (q_dim, hidden),
                    prefix + "self_attn.k_proj.weight": (kv_dim, hidden),
                    prefix + "self_attn.v_proj.weight": (kv_dim, hidden),
                    prefix + "self_attn.o_proj.weight": (hidden, q_dim),
                    prefix + "mlp.gate_proj.weight": (config.intermediate_size, hidden),
                    prefix + "mlp.up_proj.weight": (config.intermediate_size, hidden),
                    prefix + "mlp.down_proj.weight": (hidden, config.intermediate_size),
                }
            )
            if config.attention_bias:
                shapes.update(
                    {
                        prefix + "self_attn.q_proj.bias": (q_dim,),
                        prefix + "self_attn.k_proj.bias": (kv_dim,),
                        prefix + "self_attn.v_proj.bias": (kv_dim,),
                    }
                )
        return shapes

    def make_layer(self, weights: Weights, prefix: str) -> Callable[..., torch.Tensor]:
        """One decoder layer from the tensors under `prefix` (e.g. 'model.layers.3.')."""
        raise NotImplementedError

    def layer_windows(self) -> list[int | None]:
        """Each layer's sliding window (None = the whole context); families with local layers override it."""
        return [None] * self.cfg.num_layers

    def kv_bytes_per_token(self, kv_dtype: torch.dtype) -> int:
        """Bytes of K and V across all layers for one token."""
        return 2 * self.cfg.num_layers * self.cfg.num_kv_heads * cache_row_bytes(self.cfg.head_dim, kv_dtype)

    def kv_slot_bytes(self, kv_dtype: torch.dtype) -> int:
        """Bytes of one cache slot (a block id's token): K and V of one KV group's layers."""
        return 2 * self.kv_layout.group_size * self.cfg.num_kv_heads * cache_row_bytes(self.cfg.head_dim, kv_dtype)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings [T, hidden] (families that scale them override this)."""
        return embed_rows(self.embed, input_ids, self.dtype)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: list[Any], kv_cache: torch.Tensor
    ) -> torch.Tensor:
        """Final hidden states [T, hidden] for a flat batch of tokens; `meta`: each KV group's attention
        metadata; kv_cache is [group_size, 2, slots, KVH, D] (one layer per group in each tensor)."""
        hidden = self.run_layers(self.embed_tokens(input_ids), positions, meta, kv_cache)
        return self.kernels.rms_norm(hidden, self.norm, self.cfg.rms_norm_eps)

    def run_layers(
        self, hidden: torch.Tensor, positions: torch.Tensor, meta: list[Any], kv_cache: torch.Tensor
    ) -> torch.Tensor:
        """Every decoder layer in order over the embeddings (families with their own RoPE per layer, or a
        compiled path for the layers, override this)."""
        rope_tables = self.rope.tables(positions)
        for layer, (g, j) in zip(self.layers, self.kv_slots, strict=True):
            hidden = layer(hidden, self.rope, rope_tables, meta[g], kv_cache[j, 0], kv_cache[j, 1])
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits [N, vocab] for selected final hidden states."""
        return self.lm_head(hidden).float()
