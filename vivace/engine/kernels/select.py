"""The one place the engine's kernels are chosen: an attention backend and the layer ops that go with it.

Three sets, picked once from the config by `select_kernels` and handed to the model at construction:
- "torch": the reference; torch ops only, no compiled extension anywhere on the path.
- "cpu": the C++ ops of vivace.engine.cpu_ops (float32 on the CPU): paged attention read in place,
  RMSNorm fused with the residual add, rotary, SwiGLU, row argmax, the small-batch int8 linear, the
  linear on GGUF blocks and the gathered multi-LoRA product.
- "triton": the Triton kernels (CUDA; on CPU only under Triton's interpreter, for tests): paged
  attention, RMSNorm (fused with the residual add), rotary fused with the KV cache write, the gated
  activations, the greedy sampler's row argmax, the gathered multi-LoRA product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from vivace.engine.attention.base import AttentionBackend
from vivace.engine.attention.torch_backend import TorchAttentionBackend
from vivace.engine.config import EngineConfig, InvalidParameterError, ModelConfig
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.kernels import torch_ops
from vivace.engine.kernels.block_quant import BlockOps
from vivace.engine.models.rope import CompiledRotary, RotaryEmbedding

Norm = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
AddNorm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Kernels:
    """What a model and the sampler compute with; every field is chosen by `select_kernels`."""

    attention: AttentionBackend
    rms_norm: Norm
    add_rms_norm: AddNorm | None  # (x + residual, then norm) in one call; None = add, then rms_norm
    silu_mul: Callable[[torch.Tensor], torch.Tensor]
    gelu_tanh_mul: Callable[[torch.Tensor], torch.Tensor]
    rotary: Callable[[RotaryEmbedding], Any]  # wraps the tables in the rotation this set applies
    argmax_rows: Callable[[torch.Tensor], torch.Tensor]
    int8_ops: ModuleType | None = None  # the compiled int8 linear; None = its torch reference
    # The compiled linear on GGUF blocks (its tiled layout, and the product); None = its torch reference.
    block_linear: BlockOps | None = None
    # The compiled gathered multi-LoRA product (lora/layers.py); None = its masked-matmul torch reference.
    lora_add: Callable[..., None] | None = None

    @property
    def name(self) -> str:
        return self.attention.name


def resolve_backend(config: EngineConfig, dtype: torch.dtype) -> str:
    """The kernel set a config gets: 'auto' is triton on CUDA, cpu on a float32 CPU engine whose ops build, else torch."""
    asked = config.attention_backend
    if asked == "auto":
        if config.on_cuda:
            return "triton"
        return "cpu" if dtype is torch.float32 and load_cpu_ops() is not None else "torch"
    if asked == "cpu":
        if config.on_cuda or dtype is not torch.float32:
            raise InvalidParameterError("attention_backend", "'cpu' runs float32 on the CPU only")
        if load_cpu_ops() is None:
            raise InvalidParameterError(
                "attention_backend", "'cpu': the C++ CPU ops could not be built here (see the log)"
            )
    return asked


def select_kernels(config: EngineConfig, model_config: ModelConfig, dtype: torch.dtype) -> Kernels:
    """The kernel set for this engine (see the module docstring)."""
    name = resolve_backend(config, dtype)
    device = torch.device(config.device)
    if name == "torch":
        return torch_kernels(config.block_size, device)
    if name == "cpu":
        return _cpu_kernels(config.block_size, device, load_cpu_ops())
    return _triton_kernels(config.block_size, device, model_config.num_kv_heads)


def torch_kernels(block_size: int, device: torch.device) -> Kernels:
    """The reference set."""
    return Kernels(
        attention=TorchAttentionBackend(block_size, device),
        rms_norm=torch_ops.rms_norm,
        add_rms_norm=None,
        silu_mul=torch_ops.silu_mul,
        gelu_tanh_mul=torch_ops.gelu_tanh_mul,
        rotary=lambda rope: rope,
        argmax_rows=torch_ops.argmax_rows,
    )


def _cpu_kernels(block_size: int, device: torch.device, ops: ModuleType) -> Kernels:
    from vivace.engine.attention.cpu_backend import CpuAttentionBackend

    def argmax_rows(x: torch.Tensor) -> torch.Tensor:
        # torch's argmax is scalar on CPU: [32, 49152] 1.5 ms against the kernel's 0.5 ms.
        if x.dim() != 2 or x.dtype is not torch.float32 or x.shape[1] == 0:
            return x.argmax(dim=-1)
        return ops.argmax_rows(x)

    return Kernels(
        attention=CpuAttentionBackend(block_size, device, ops),
        rms_norm=ops.rms_norm,
        add_rms_norm=ops.add_rms_norm,
        silu_mul=ops.silu_mul,
        gelu_tanh_mul=torch_ops.gelu_tanh_mul,
        rotary=lambda rope: CompiledRotary(rope, ops),
        argmax_rows=argmax_rows,
        int8_ops=ops,
        # registered by the module's block_linear.cpp
        block_linear=BlockOps(torch.ops.vivace_cpu.block_tiles, torch.ops.vivace_cpu.block_linear),
        lora_add=ops.lora_add,
    )


def _triton_kernels(block_size: int, device: torch.device, num_kv_heads: int) -> Kernels:
    try:
        from vivace.engine.attention.triton_backend import DEFAULT_NUM_SMS, TritonAttentionBackend
        from vivace.engine.kernels.triton_act import gelu_tanh_mul, silu_mul
        from vivace.engine.kernels.triton_argmax import argmax_rows
        from vivace.engine.kernels.triton_lora import lora_add
        from vivace.engine.kernels.triton_norm import add_rms_norm, rms_norm
        from vivace.engine.kernels.triton_rotary import TritonRotary
    except ImportError as exc:
        raise InvalidParameterError("attention_backend", f"'triton' needs triton (pip install triton): {exc}") from exc
    num_sms = DEFAULT_NUM_SMS
    if device.type == "cuda":
        num_sms = torch.cuda.get_device_properties(device).multi_processor_count
    return Kernels(
        attention=TritonAttentionBackend(block_size, device, num_kv_heads, num_sms),
        rms_norm=rms_norm,
        add_rms_norm=add_rms_norm,
        silu_mul=silu_mul,
        gelu_tanh_mul=gelu_tanh_mul,
        rotary=lambda rope: TritonRotary(rope.cos, rope.signed_sin),
        argmax_rows=argmax_rows,
        lora_add=lora_add,
    )
