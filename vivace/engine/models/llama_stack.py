"""A Llama-family model's layers run by one compiled call per step (cpu_ops/csrc/llama_stack.cpp).

On the "cpu" kernel set with every projection on GGUF blocks, a layer is a fixed sequence of compiled
ops; the C++ stack runs that same sequence for all layers, so the result is bitwise the Python
layers' while the interpreter's share of a one-token step (slices, views and ~20 calls per layer) is
gone. Anything the sequence does not cover (LoRA, QK-norm, a sliding window, an int8 KV cache and
its key rotation, a draft tree's mask, matrices not on blocks) keeps the Python layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from vivace.engine.attention.cpu_backend import CpuAttentionBackend
from vivace.engine.models.linear import BlockQuantLinear
from vivace.engine.models.rope import CompiledRotary

if TYPE_CHECKING:
    from vivace.engine.models.llama import LlamaModel


def _matrix(layer: Any) -> tuple[torch.Tensor, int, int, torch.Tensor] | None:
    """(tiles, GGML type, rows, bias or an empty tensor) of a compiled block linear, else None."""
    if type(layer) is not BlockQuantLinear or layer.tiles is None:
        return None
    bias = layer.bias if layer.bias is not None else torch.empty(0)
    return layer.tiles, layer.qtype, layer.shape[0], bias


def build_stack(model: LlamaModel) -> Any | None:
    """The compiled stack for `model`'s layers, or None when its layers are not the covered sequence."""
    backend = model.kernels.attention
    if not isinstance(backend, CpuAttentionBackend) or not hasattr(backend.ops, "LlamaStack"):
        return None
    if not isinstance(model.rope, CompiledRotary) or model.lora is not None:
        return None
    if any(group != 0 for group, _ in model.kv_slots):
        return None
    norms, tiles, qtypes, rows, biases = [], [], [], [], []
    for layer in model.layers:
        attn = layer.attn
        if attn.qk_norm is not None or attn.window is not None or layer.add_norm is None:
            return None
        matrices = [_matrix(m) for m in (attn.qkv, attn.o_proj, layer.mlp.gate_up, layer.mlp.down)]
        if any(m is None for m in matrices) or layer.mlp.act_mul is not model.kernels.silu_mul:
            return None
        norms += [layer.input_norm, layer.post_norm]
        for tile, qtype, n, bias in matrices:  # type: ignore[misc]
            tiles.append(tile)
            qtypes.append(qtype)
            rows.append(n)
            biases.append(bias)
    first = model.layers[0].attn
    return backend.ops.LlamaStack(
        norms,
        tiles,
        qtypes,
        rows,
        biases,
        [j for _, j in model.kv_slots],
        model.rope.cos,
        model.rope.signed_sin,
        first.num_heads,
        first.num_kv_heads,
        first.head_dim,
        model.layers[0].eps,
        first.scale,
        backend.block_size,
    )


def stack_covers(meta: list[Any], kv_cache: torch.Tensor) -> bool:
    """Whether this step is one the stack computes as the Python layers would: no int8 KV, no draft tree."""
    return kv_cache.dtype != torch.int8 and meta[0].tree is None  # a cpu backend's metadata (build_stack)
