"""What every loader returns: the model's shape, its weights under HF names, and its tokenizer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from vivace.engine.config import ModelConfig
from vivace.engine.kernels.block_quant import QuantBlocks
from vivace.engine.loaders.errors import CorruptModelError
from vivace.engine.loaders.lazy_weights import weight_shape
from vivace.engine.models.registry import model_class
from vivace.engine.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """A model ready to build: weights use HF transformers names (`model.layers.0.self_attn.q_proj.weight`)."""

    config: ModelConfig
    weights: Mapping[str, torch.Tensor]  # a GGUF's: LazyWeights (block matrices dequantized on first read)
    tokenizer: Tokenizer
    # A GGUF's Q4_0/Q4_1/Q8_0 matrices as stored (rows in HF order), by the same names, beside `weights`.
    blocks: dict[str, QuantBlocks] = field(default_factory=dict)


def expected_weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight the model class serving `config.architecture` needs, by HF name, with its shape."""
    return model_class(config.architecture).weight_shapes(config)


def check_weight_shapes(config: ModelConfig, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CorruptModelError naming the first missing or mis-shaped weight."""
    for name, shape in expected_weight_shapes(config).items():
        if name not in weights:
            raise CorruptModelError(f"{source}: weight {name} is missing")
        if weight_shape(weights, name) != shape:
            raise CorruptModelError(
                f"{source}: weight {name} has shape {weight_shape(weights, name)}, config implies {shape}"
            )
