"""Building an engine's model from its config: weights and tokenizer loaded, kernels chosen, model constructed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from vivace.engine.chat_template import ChatTemplateError, compile_chat_template
from vivace.engine.config import EngineConfig, InvalidParameterError, ModelConfig
from vivace.engine.kernels.select import Kernels, select_kernels
from vivace.engine.loaders import load_model
from vivace.engine.loaders.tokenizer_file import load_tokenizer
from vivace.engine.lora.manager import LoRAManager
from vivace.engine.models.blocks import DecoderModel
from vivace.engine.models.random_weights import is_random_spec, load_random_model
from vivace.engine.models.registry import build_model
from vivace.engine.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.int8}


@dataclass
class EngineModel:
    """What an engine computes with: the model, its config and tokenizer, and the kernels it was built with."""

    model: DecoderModel
    config: ModelConfig
    tokenizer: Tokenizer
    kernels: Kernels


def load_engine_model(config: EngineConfig) -> EngineModel:
    """Load the configured model (a path, the packaged default, or a random:NAME spec) onto its device."""
    check_device(config.device)
    dtype = DTYPES[config.resolved_dtype]
    quantization = config.resolved_quantization
    if quantization in ("int8", "gguf") and (dtype is not torch.float32 or config.device != "cpu"):
        raise InvalidParameterError("quantization", f"{quantization} weights run on CPU with dtype float32 only")
    if is_random_spec(config.model):
        loaded = load_random_model(config.model, dtype, config.device, config.tokenizer)
    else:
        loaded = load_model(config.model, torch.float32)
        if config.tokenizer is not None:
            loaded.tokenizer = load_tokenizer(config.tokenizer)
        if config.device != "cpu":  # before the model fuses q/k/v and gate/up, so that happens on the device
            loaded.weights = {name: w.to(config.device, dtype) for name, w in loaded.weights.items()}
    tokenizer = loaded.tokenizer
    if config.chat_template is not None:
        tokenizer = tokenizer.with_chat_template(read_chat_template(config.chat_template))
    kernels = select_kernels(config, loaded.config, dtype)
    lora = (
        LoRAManager(config.max_loras, config.max_lora_rank, dtype, config.device, kernels.lora_add)
        if config.enable_lora
        else None
    )
    model = build_model(
        loaded.config,
        loaded.weights,
        dtype,
        quantization,
        kernels,
        loaded.blocks,
        lora,
        hybrid_kv=not config.disable_hybrid_kv_cache_manager,
    )
    return EngineModel(model, loaded.config, tokenizer, kernels)


def read_chat_template(value: str) -> str:
    """A chat template given as a file path or as the template itself (as vLLM's --chat-template), compiled once
    here so a broken one fails at startup rather than on the first chat request."""
    source = value
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            source = f.read()
    try:
        compile_chat_template(source)
    except ChatTemplateError as e:
        raise InvalidParameterError("chat_template", str(e)) from None
    return source


def check_device(device: str) -> None:
    """Raise a clear error, before any loading, when a CUDA device is asked for that is not here."""
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise InvalidParameterError(
            "device",
            f"{device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU (a CPU-only build of "
            "torch, or no NVIDIA driver); install a CUDA build of torch, or run on 'cpu'",
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InvalidParameterError(
            "device", f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
