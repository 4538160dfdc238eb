"""The model registry: a family registered here, in one class, runs through the whole engine.

The toy family has parallel attention and MLP branches over one shared norm (as GPT-J and Falcon
do) and no post-attention norm. It touches nothing in the runner, scheduler or loaders: an HF-layout
directory with its model_type loads, and the paged engine's greedy tokens and logprobs (chunked
prefill, decode, prefix reuse) match a dense recomputation of the same weights written below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vivace.engine.config import ModelConfig, SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.llm import LLM
from vivace.engine.loaders.errors import UnsupportedModelError
from vivace.engine.loaders.tokenizer_file import load_tokenizer
from vivace.engine.models.blocks import DecoderModel, GatedMLP, PagedAttention, Weights
from vivace.engine.models.llama import LlamaModel
from vivace.engine.models.registry import model_class, register_model, supported_architectures, unregister_model

ARCH = "toy-parallel"
CONFIG = dict(
    model_type=ARCH,
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
)


class ToyParallelLayer:
    def __init__(self, cfg: ModelConfig, weights: Weights, prefix: str) -> None:
        self.eps = cfg.rms_norm_eps
        self.norm = weights.kernels.rms_norm
        self.input_norm = weights[prefix + "input_layernorm.weight"]
        self.attn = PagedAttention(cfg, weights, prefix + "self_attn.")
        self.mlp = GatedMLP(weights, prefix + "mlp.", weights.kernels.silu_mul)

    def __call__(self, hidden, rope, rope_tables, meta, k_cache, v_cache):
        x = self.norm(hidden, self.input_norm, self.eps)
        return hidden + self.attn(x, rope, rope_tables, meta, k_cache, v_cache) + self.mlp(x)


class ToyParallelModel(DecoderModel):
    @classmethod
    def weight_shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        shapes = super().weight_shapes(config)
        return {name: shape for name, shape in shapes.items() if "post_attention_layernorm" not in name}

    def make_layer(self, weights: Weights, prefix: str) -> ToyParallelLayer:
        return ToyParallelLayer(self.cfg, weights, prefix)


@pytest.fixture
def toy_family():
    register_model(ARCH)(ToyParallelModel)
    yield
    unregister_model(ARCH)


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    cfg = ModelConfig(
        architecture=ARCH,
        vocab_size=CONFIG["vocab_size"],
        hidden_size=64,
        intermediate_size=96,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
    )
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in ToyParallelModel.weight_shapes(cfg).items():
        if name.endswith("norm.weight"):
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[name] = 0.2 * torch.randn(shape, generator=gen)
    return out


def _write_dir(path: Path, weights: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(CONFIG))
    save_file(weights, str(path / "model.safetensors"))
    load_tokenizer().backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}))
    return path


def _dense_logits(w: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    """The toy model over the whole sequence with dense causal attention: logits [T, vocab]."""
    T, H, KVH, D, eps = len(ids), 4, 2, 16, CONFIG["rms_norm_eps"]
    inv_freq = 1.0 / (CONFIG["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    cos, sin = (
        torch.cat([freqs, freqs], -1).cos().float()[:, None],
        torch.cat([freqs, freqs], -1).sin().float()[:, None],
    )

    def rotate(t: torch.Tensor) -> torch.Tensor:
        return t * cos + torch.cat([-t[..., D // 2 :], t[..., : D // 2]], -1) * sin

    def norm(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * weight

    x = w["model.embed_tokens.weight"][ids]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}."
        n = norm(x, w[p + "input_layernorm.weight"])
        q = rotate((n @ w[p + "self_attn.q_proj.weight"].T).view(T, H, D)).transpose(0, 1)
        k = (
            rotate((n @ w[p + "self_attn.k_proj.weight"].T).view(T, KVH, D))
            .repeat_interleave(H // KVH, 1)
            .transpose(0, 1)
        )
        v = (n @ w[p + "self_attn.v_proj.weight"].T).view(T, KVH, D).repeat_interleave(H // KVH, 1).transpose(0, 1)
        scores = (q @ k.transpose(1, 2) / D**0.5).masked_fill(~causal, float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(0, 1).reshape(T, H * D) @ w[p + "self_attn.o_proj.weight"].T
        mlp = (torch.nn.functional.silu(n @ w[p + "mlp.gate_proj.weight"].T) * (n @ w[p + "mlp.up_proj.weight"].T)) @ w[
            p + "mlp.down_proj.weight"
        ].T
        x = x + attn + mlp
    return norm(x, w["model.norm.weight"]) @ w["model.embed_tokens.weight"].T


@pytest.mark.parametrize("kernels", ["torch", "cpu"])
def test_a_registered_family_runs_through_the_engine(tmp_path: Path, toy_family: None, kernels: str) -> None:
    if kernels == "cpu" and load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    weights = _weights()
    llm = LLM(
        str(_write_dir(tmp_path / "toy", weights)),
        quantization="none",
        attention_backend=kernels,
        kv_cache_memory_bytes=8 << 20,
        block_size=16,
        max_num_batched_tokens=24,  # 40-token prompts: chunked
    )
    assert isinstance(llm.engine.model, ToyParallelModel) and llm.engine.kernels.name == kernels
    prompts = [
        [int(t) for t in torch.randint(3, 49000, (40,), generator=torch.Generator().manual_seed(s))] for s in (1, 2)
    ]
    prompts.append(prompts[0][:32] + [7, 8, 9])  # its first two blocks come from the prefix cache
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, logprobs=0)
    outs = llm.generate(prompts, params)
    assert outs[2].num_cached_tokens == 32
    for ids, out in zip(prompts, outs, strict=True):
        seq = list(ids)
        for lp in out.outputs[0].logprobs:
            with torch.inference_mode():
                logprobs = _dense_logits(weights, seq)[-1].log_softmax(-1)
            assert lp.token_id == int(logprobs.argmax())
            assert abs(lp.logprob - float(logprobs.max())) < 1e-3
            seq.append(lp.token_id)
    assert llm.engine.scheduler.kv.num_used == 0


def test_unknown_architectures_are_named_with_the_supported_ones() -> None:
    with pytest.raises(
        UnsupportedModelError,
        match=r"architecture 'nope' is not supported; supported: gemma3, gemma3_text, llama, mistral, qwen2, qwen3",
    ):
        model_class("nope")
    assert {"llama", "mistral", "qwen2"} <= set(supported_architectures())
    assert model_class("qwen2") is LlamaModel


def test_a_name_cannot_be_taken_twice(toy_family: None) -> None:
    with pytest.raises(ValueError, match="'toy-parallel' is already served by ToyParallelModel"):
        register_model(ARCH)(LlamaModel)
