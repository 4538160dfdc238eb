"""Configuration objects: the model's shape, the engine's knobs and per-request sampling."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vivace.engine.speculative.config import SpeculativeConfig
    from vivace.engine.structured.params import StructuredOutputsParams


class InvalidParameterError(ValueError):
    """A request or configuration value is out of range; `param` names the offending field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass
class ModelConfig:
    """Shape of a decoder model (Llama, SmolLM, Qwen2/3, Mistral, Gemma 3)."""

    architecture: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # HF-style rope_scaling dict, e.g. {"rope_type": "llama3", "factor": 8.0, ...}; None = plain RoPE.
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2-style bias on q/k/v projections
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    # Per layer "full_attention" or "sliding_attention" (HF's layer_types); empty = every layer full.
    layer_types: list[str] = field(default_factory=list)
    sliding_window: int | None = None  # keys a sliding layer's query sees, itself included
    rope_local_theta: float | None = None  # sliding layers' RoPE base (Gemma 3; they take no rope_scaling)
    query_pre_attn_scalar: float | None = None  # attention scale is its -1/2 power (Gemma); None = head_dim
    final_logit_softcapping: float | None = None  # logits = cap * tanh(logits / cap) (Gemma)

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of `layer`, or None when it attends over the whole context."""
        if self.layer_types and self.layer_types[layer] == "sliding_attention":
            return self.sliding_window
        return None


@dataclass
class EngineConfig:
    """Everything that decides how the engine runs; one object flows from the CLI/server down."""

    # A .gguf file, an HF-layout directory, or a packaged model by name ("smollm2", "gemma3"); None = smollm2.
    model: str | None = None
    # A tokenizer to use instead of the model's own: a .gguf file (only its metadata is read, so a
    # tensor-less one does) or an HF directory. random: models otherwise take the packaged model's.
    tokenizer: str | None = None
    # A Jinja chat template replacing the tokenizer's: a file path, or the template text itself.
    chat_template: str | None = None
    device: str = "cpu"
    # Activations and dequantized weights: "auto" = float32 on CPU, bfloat16 on CUDA.
    dtype: str = "auto"
    # Linear-layer weights: "none" keeps `dtype`; "int8" = per-channel int8 weights with dynamic int8
    # activations (CPU); "gguf" = a GGUF's own Q4_0/Q4_1/Q8_0 blocks computed as stored, with
    # activations quantized per block of 32 (CPU; other weights as in "int8"); "auto" = gguf on CPU
    # in float32, else none.
    quantization: str = "auto"
    # The kernel set (attention backend and layer ops; chosen by kernels/select.py): "auto" = "cpu"
    # for float32 on the CPU when the C++ ops build (else "torch"), "triton" on CUDA; "torch" = the
    # reference (torch ops only, no compiled extension); "cpu" = the C++ CPU ops; "triton" = the
    # Triton kernels (CUDA; on CPU only under Triton's interpreter, TRITON_INTERPRET=1, for tests).
    attention_backend: str = "auto"
    # Decode-only steps on CUDA replay CUDA graphs captured for padded batch sizes; False = eager.
    cuda_graphs: bool = True
    # KV cache storage: "auto" = float16 when the weights are int8 or GGUF blocks on CPU (the CPU default:
    # half the bytes decode attention reads, in llama.cpp's own KV format, whose 10-bit mantissa keeps
    # more of float32's predictions than bfloat16's 7-bit one; bench/quality_cpu.py), bfloat16 for int8
    # weights on CUDA, else `dtype`; or "float32" / "bfloat16" / "float16" / "int8" (int8 values with a
    # float16 scale per token and KV head: attention/kv_quant.py) explicitly.
    kv_cache_dtype: str = "auto"
    block_size: int = 16  # tokens per KV block
    kv_cache_memory_bytes: int | None = None  # explicit KV budget; wins over the fraction
    # Of free memory when no byte budget: None = 0.10 of the host's on CPU, 0.85 of the GPU's
    # (measured after the weights are loaded) on CUDA.
    kv_cache_memory_fraction: float | None = None
    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 512  # token budget per step (prefill chunks + decodes)
    max_model_len: int | None = None  # defaults to the model's context length
    enable_prefix_caching: bool = True
    # Session KV tier (kv_tier.py): prefix-cache blocks evicted from the device keep their KV there and
    # are restored instead of recomputed. Its size in bytes (0 = off), and where: a file for a bounded
    # memory-mapped store on disk (the CPU engine's choice, as its device memory already is RAM; it
    # survives restarts), or None for host memory (a CUDA engine's).
    kv_tier_bytes: int = 0
    kv_tier_path: str | None = None
    # Seconds a session's (`user` / `session_id`) blocks stay pinned on the device after its last turn;
    # 0 = no pinning (the default: a pin keeps other traffic's prefixes out, so the operator opts in).
    # Pins hold at most half the cache and yield to running requests (kv_sessions.py).
    session_ttl: float = 0.0
    # Sliding-window layers keep only the KV blocks their window still sees (a KV group of their own,
    # kv_groups.py); True = every layer keeps the whole context in one block table (vLLM's flag).
    disable_hybrid_kv_cache_manager: bool = False
    num_threads: int | None = None  # torch intra-op threads on CPU; None = torch's default
    seed: int = 0
    # Speculative decoding: "ngram" or "ngram:k=4,max_n=4,min_n=2" (prompt lookup: k tokens proposed
    # per step from the latest earlier match of the last n tokens), "draft:MODEL[,k=4]" (a smaller
    # model with the target's tokenizer proposes) or "medusa:PATH[,k=4]" (Medusa heads trained by
    # `vivace train-medusa` guess the next k tokens from the last hidden state); None = off.
    speculative: str | None = None
    # Multi-LoRA: adapter slots in every q/k/v/o/gate/up/down projection, PEFT adapters loaded into them
    # at start (`lora_modules`: name -> adapter directory) or at run time; requests pick one by name.
    enable_lora: bool = False
    max_loras: int = 4  # adapters loaded at once
    max_lora_rank: int = 16  # highest adapter rank accepted (lower ranks are zero-padded to it)
    lora_modules: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise InvalidParameterError("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.block_size <= 0:
            raise InvalidParameterError("block_size", f"must be positive, got {self.block_size}")
        if self.max_num_seqs <= 0:
            raise InvalidParameterError("max_num_seqs", f"must be positive, got {self.max_num_seqs}")
        if self.max_num_batched_tokens <= 0:
            raise InvalidParameterError(
                "max_num_batched_tokens", f"must be positive, got {self.max_num_batched_tokens}"
            )
        if self.kv_cache_memory_fraction is not None and not 0.0 < self.kv_cache_memory_fraction <= 1.0:
            raise InvalidParameterError(
                "kv_cache_memory_fraction", f"must be in (0, 1], got {self.kv_cache_memory_fraction}"
            )
        if self.kv_cache_dtype not in ("auto", "float32", "bfloat16", "float16", "int8"):
            raise InvalidParameterError(
                "kv_cache_dtype", f"must be auto, float32, bfloat16, float16 or int8, got {self.kv_cache_dtype!r}"
            )
        if self.kv_tier_bytes < 0:
            raise InvalidParameterError("kv_tier_bytes", f"must be >= 0 (0 = off), got {self.kv_tier_bytes}")
        if self.kv_tier_path is not None and not self.kv_tier_bytes:
            raise InvalidParameterError("kv_tier_bytes", "must be set (> 0) when kv_tier_path is given")
        if not 0.0 <= self.session_ttl < math.inf:
            raise InvalidParameterError("session_ttl", f"must be >= 0 seconds and finite, got {self.session_ttl}")
        if self.attention_backend not in ("auto", "torch", "cpu", "triton"):
            raise InvalidParameterError(
                "attention_backend", f"must be 'auto', 'torch', 'cpu' or 'triton', got {self.attention_backend!r}"
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise InvalidParameterError("dtype", f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.lora_modules:
            self.enable_lora = True
        if self.max_loras <= 0:
            raise InvalidParameterError("max_loras", f"must be positive, got {self.max_loras}")
        if self.max_lora_rank <= 0:
            raise InvalidParameterError("max_lora_rank", f"must be positive, got {self.max_lora_rank}")
        if len(self.lora_modules) > self.max_loras:
            raise InvalidParameterError(
                "lora_modules", f"{len(self.lora_modules)} adapters given, above max_loras {self.max_loras}"
            )
        if self.quantization not in ("auto", "none", "int8", "gguf"):
            raise InvalidParameterError(
                "quantization", f"must be 'auto', 'none', 'int8' or 'gguf', got {self.quantization!r}"
            )
        self.speculative_config  # noqa: B018 (parsed here so a bad value fails at construction)

    @property
    def speculative_config(self) -> SpeculativeConfig | None:
        """`speculative` parsed; None when speculation is off."""
        from vivace.engine.speculative.config import SpeculativeConfig

        return None if self.speculative is None else SpeculativeConfig.parse(self.speculative)

    @property
    def on_cuda(self) -> bool:
        """Whether the engine runs on a CUDA device."""
        return self.device.startswith("cuda")

    @property
    def resolved_dtype(self) -> str:
        """The activation dtype actually used: 'auto' is bfloat16 on CUDA, float32 elsewhere."""
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if self.on_cuda else "float32"

    @property
    def resolved_kv_cache_memory_fraction(self) -> float:
        """The fraction of free memory given to the KV cache."""
        if self.kv_cache_memory_fraction is not None:
            return self.kv_cache_memory_fraction
        return 0.85 if self.on_cuda else 0.10

    @property
    def resolved_quantization(self) -> str:
        """The weight format actually used: 'auto' picks gguf for float32 on CPU: a GGUF's Q4_0/Q4_1/Q8_0 blocks as
        stored, its other matrix types re-quantized to Q8_0 blocks, int8 for models with no blocks (HF, random)."""
        if self.quantization != "auto":
            return self.quantization
        return "gguf" if self.device == "cpu" and self.resolved_dtype == "float32" else "none"

    @property
    def resolved_kv_cache_dtype(self) -> str:
        """The KV storage dtype actually used."""
        if self.kv_cache_dtype != "auto":
            return self.kv_cache_dtype
        if self.resolved_quantization in ("int8", "gguf"):
            return "bfloat16" if self.on_cuda else "float16"
        return self.resolved_dtype


@dataclass
class SamplingParams:
    """Per-request sampling, following vLLM/OpenAI semantics. Validated on construction."""

    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 (or -1) = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # HF-style: divides positive logits of seen tokens (prompt+output)
    presence_penalty: float = 0.0  # OpenAI-style, over output tokens
    frequency_penalty: float = 0.0  # OpenAI-style, over output tokens
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    max_tokens: int | None = 256  # None = up to the context length
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int | None = None  # None = off; k >= 0 = chosen token's logprob plus top-k alternatives
    prompt_logprobs: int | None = None  # None = off; k >= 0 = every prompt token's logprob plus top-k (vLLM)
    skip_special_tokens: bool = True
    # The output must match this (a JSON schema, regex, grammar, ...); None = unconstrained.
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.top_k == -1:
            self.top_k = 0
        checks: list[tuple[str, bool, str]] = [
            ("n", self.n >= 1, "must be >= 1"),
            ("temperature", 0.0 <= self.temperature < math.inf, "must be >= 0 and finite"),
            ("top_k", self.top_k >= 0, "must be >= 0 (or -1 for off)"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("repetition_penalty", 0.0 < self.repetition_penalty < math.inf, "must be > 0 and finite"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be in [-2, 2]"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "must be in [-2, 2]"),
            ("max_tokens", self.max_tokens is None or self.max_tokens >= 1, "must be >= 1"),
            ("min_tokens", self.min_tokens >= 0, "must be >= 0"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "must be in [0, 20]"),
            ("prompt_logprobs", self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= 20, "must be in [0, 20]"),
            # torch's generators take seeds in [-2**63, 2**64): wider ones would fail at admission.
            # Choice i is seeded with seed + i: the last one must fit too.
            (
                "seed",
                self.seed is None or -(2**63) <= self.seed <= 2**64 - self.n,
                "must fit in 64 bits (with n-1 added)",
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise InvalidParameterError(name, f"{message}, got {getattr(self, name)!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise InvalidParameterError(
                "min_tokens", f"must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}"
            )
        if any(not s for s in self.stop):
            raise InvalidParameterError("stop", "stop strings must be non-empty")
        # OpenAI's range; also keeps NaN and infinities (which would poison the whole row) out.
        bad_bias = [b for b in (self.logit_bias or {}).values() if not -100.0 <= b <= 100.0]
        if bad_bias:
            raise InvalidParameterError("logit_bias", f"values must be in [-100, 100], got {bad_bias[0]}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_token_history(self) -> bool:
        """Whether sampling looks at the tokens so far (penalties, min_tokens)."""
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.min_tokens > 0
        )
