"""PEFT LoRA adapters read from a directory: adapter_config.json + adapter_model.safetensors.

An adapter becomes, per targeted projection (HF module name, e.g. `model.layers.3.self_attn.q_proj`),
its A [r, in] and B [out, r] matrices and one scaling (lora_alpha / r, or / sqrt(r) with rsLoRA).
What vivace cannot apply exactly (DoRA, LoRA on embeddings or the LM head, trained biases, per-module
rank or alpha patterns) is refused with an error naming it, never silently ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vivace.engine.config import InvalidParameterError

# The projections a decoder layer fuses (q/k/v, gate/up) or keeps alone (o, down); LoRA may target any.
SUPPORTED_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")


class LoRAError(InvalidParameterError):
    """An adapter that cannot be loaded; `param` names the field (lora_path, lora_name, ...)."""


@dataclass
class LoRAAdapter:
    """One adapter's low-rank matrices by module name, with the scaling applied to B @ A."""

    path: str
    rank: int
    scaling: float
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A [r, in], B [out, r])


def load_adapter(path: str) -> LoRAAdapter:
    """Read the PEFT adapter in directory `path`; LoRAError naming what is missing or unsupported."""
    config_path = os.path.join(path, "adapter_config.json")
    weights_path = os.path.join(path, "adapter_model.safetensors")
    if not os.path.isdir(path):
        raise LoRAError("lora_path", f"{path!r} is not a directory holding a PEFT adapter")
    for required in (config_path, weights_path):
        if not os.path.isfile(required):
            raise LoRAError("lora_path", f"{path!r} has no {os.path.basename(required)}")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LoRAError("lora_path", f"{config_path}: not readable JSON ({e})") from None
    rank, scaling = _check_config(config, config_path)
    try:
        tensors = load_file(weights_path)
    except (OSError, ValueError, SafetensorError) as e:
        raise LoRAError("lora_path", f"{weights_path}: not a readable safetensors file ({e})") from None
    return LoRAAdapter(path, rank, scaling, _pair_weights(tensors, rank, weights_path))


def _check_config(config: dict, config_path: str) -> tuple[int, float]:
    """The adapter's rank and scaling, after refusing what would not be applied exactly."""
    refusals = {
        "peft_type": config.get("peft_type", "LORA") not in ("LORA", None),
        "use_dora": bool(config.get("use_dora")),
        "bias": config.get("bias", "none") not in ("none", None),
        "modules_to_save": bool(config.get("modules_to_save")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
    }
    for key, refused in refusals.items():
        if refused:
            raise LoRAError("lora_path", f"{config_path}: {key}={config.get(key)!r} is not supported")
    rank = config.get("r")
    alpha = config.get("lora_alpha", rank)
    if not isinstance(rank, int) or rank <= 0 or not isinstance(alpha, int | float):
        raise LoRAError("lora_path", f"{config_path}: needs a positive integer 'r' and a numeric 'lora_alpha'")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return rank, float(scaling)


def _pair_weights(
    tensors: dict[str, torch.Tensor], rank: int, weights_path: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A, B) from PEFT's tensor names, every tensor accounted for and shaped for `rank`."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None or match["module"].rsplit(".", 1)[-1] not in SUPPORTED_MODULES:
            raise LoRAError(
                "lora_path",
                f"{weights_path}: tensor {key!r} is not LoRA on a supported projection ({', '.join(SUPPORTED_MODULES)})",
            )
        halves.setdefault(match["module"], {})[match["which"]] = tensor.float()
    pairs = {}
    for module, half in halves.items():
        if set(half) != {"A", "B"}:
            raise LoRAError("lora_path", f"{weights_path}: {module} has lora_{'A' if 'A' not in half else 'B'} missing")
        a, b = half["A"], half["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise LoRAError(
                "lora_path", f"{weights_path}: {module} has A {tuple(a.shape)} and B {tuple(b.shape)}, not rank {rank}"
            )
        pairs[module] = (a, b)
    if not pairs:
        raise LoRAError("lora_path", f"{weights_path}: holds no LoRA weights")
    return pairs
