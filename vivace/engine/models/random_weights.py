"""Random-weight Llama-shaped models, for benchmarking shapes whose weights cannot be shipped here.

Named in EngineConfig.model as "random:NAME" or "random:NAME@SEED" (seed 0 by default), NAME one of
PRESETS. Weights are drawn on the CPU in fixed pieces, each from its own generator seeded from
(seed, tensor, piece), then cast and moved: a seed gives the same model on CPU and CUDA whatever
the thread count, and the pieces are drawn in parallel (torch's seeded CPU draw is one thread:
5.6 ns a value, 45 s for the 8B shape). The tokenizer is the packaged model's
(SmolLM2, 49,152 tokens); ids beyond it decode to nothing, which benchmarks with ignore_eos don't mind.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor

import torch

from vivace.engine.config import InvalidParameterError, ModelConfig
from vivace.engine.loaders.types import LoadedModel, expected_weight_shapes

PREFIX = "random:"
INIT_STD = 0.02  # HF's initializer_range for Llama
PIECE = 1 << 22  # values per independently seeded piece of a tensor

_LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

PRESETS: dict[str, ModelConfig] = {
    # A few-layer toy for tests: the packaged tokenizer's vocabulary, tiny everything else.
    "tiny": ModelConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
    "smollm2-135m": ModelConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    # Gemma 3 270M's shape: 5 sliding-window layers to 1 global, one KV head of 256, 262k vocabulary.
    "gemma3-270m": ModelConfig(
        architecture="gemma3",
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_layers=18,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
        sliding_window=512,
        rope_local_theta=1e4,
        query_pre_attn_scalar=256.0,
    ),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        rope_theta=500000.0,
        rope_scaling=_LLAMA3_SCALING,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
    ),
    "llama-3-8b": ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
}


def is_random_spec(model: str | None) -> bool:
    """Whether an EngineConfig.model value names a random-weight model."""
    return model is not None and model.startswith(PREFIX)


def parse_random_spec(spec: str) -> tuple[str, int]:
    """("llama-3.2-1b", 0) from "random:llama-3.2-1b"; "random:tiny@7" gives seed 7."""
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    name, _, seed_text = body.partition("@")
    if name not in PRESETS:
        raise InvalidParameterError("model", f"unknown random-weight preset {name!r}; presets: {', '.join(PRESETS)}")
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise InvalidParameterError("model", f"seed in {spec!r} must be an integer, got {seed_text!r}") from None
    return name, seed


def num_parameters(cfg: ModelConfig) -> int:
    """Parameter count of a Llama-shaped model of this config (tied embeddings counted once)."""
    return sum(math.prod(shape) for shape in expected_weight_shapes(cfg).values())


def random_weights(
    cfg: ModelConfig, seed: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Every weight of `cfg` under HF names: norms 1, matrices uniform with std INIT_STD, drawn on CPU."""
    bound = INIT_STD * math.sqrt(3.0)  # uniform(-b, b) has std b / sqrt(3); rand is 3x faster than randn
    weights = {}
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        for index, (name, shape) in enumerate(expected_weight_shapes(cfg).items()):
            if name.endswith("norm.weight"):
                w = torch.ones(shape, dtype=dtype)
            else:
                w = torch.empty(shape, dtype=dtype)
                _fill_uniform(w.view(-1), bound, (seed, index), pool)
            weights[name] = w.to(device)
    return weights


def _fill_uniform(flat: torch.Tensor, bound: float, key: tuple[int, int], pool: ThreadPoolExecutor) -> None:
    """flat ~ U(-bound, bound), piece by piece, each piece from a generator seeded by (key, piece).

    The draw is float32 whatever flat's dtype (another dtype gets its rounding, piece by piece).
    """
    seed, index = key

    def fill(piece: int) -> None:
        gen = torch.Generator().manual_seed((seed * 1_000_003 + index) * 1_000_033 + piece & (2**63 - 1))
        part = flat[piece * PIECE : (piece + 1) * PIECE]
        if part.dtype is torch.float32:
            part.uniform_(-bound, bound, generator=gen)
        else:
            part.copy_(torch.empty(part.numel()).uniform_(-bound, bound, generator=gen))

    list(pool.map(fill, range(-(-flat.numel() // PIECE))))


def load_random_model(
    spec: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tokenizer_path: str | None = None,
) -> LoadedModel:
    """A LoadedModel for "random:NAME[@SEED]" with the tokenizer at tokenizer_path (default: the packaged one)."""
    from vivace.engine.loaders.tokenizer_file import load_tokenizer

    name, seed = parse_random_spec(spec)
    cfg = copy.deepcopy(PRESETS[name])
    tokenizer = load_tokenizer(tokenizer_path)
    cfg.bos_token_id = tokenizer.bos_token_id
    cfg.eos_token_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return LoadedModel(config=cfg, weights=random_weights(cfg, seed, dtype, device), tokenizer=tokenizer)
