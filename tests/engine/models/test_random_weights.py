"""Random-weight models: deterministic from the seed, Llama-shaped, usable by the engine."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.loaders.types import expected_weight_shapes
from vivace.engine.models.random_weights import (
    PRESETS,
    load_random_model,
    num_parameters,
    parse_random_spec,
    random_weights,
)


def test_same_seed_same_weights_other_seed_different() -> None:
    cfg = PRESETS["tiny"]
    a, b, c = random_weights(cfg, 5), random_weights(cfg, 5), random_weights(cfg, 6)
    assert a.keys() == b.keys() == expected_weight_shapes(cfg).keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], c["model.layers.0.self_attn.q_proj.weight"])


def test_same_weights_whatever_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces are drawn in parallel; each has its own seeded generator, so threads change nothing."""
    from vivace.engine.models import random_weights as module

    cfg = PRESETS["tiny"]
    monkeypatch.setattr(module, "PIECE", 1000)  # many pieces per tensor, some partial
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = random_weights(cfg, 3)
        torch.set_num_threads(max(2, threads))
        many = random_weights(cfg, 3)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one[k], many[k]) for k in one)
    q = one["model.layers.0.self_attn.q_proj.weight"].view(-1)
    assert not torch.equal(q[:1000], q[1000:2000])  # pieces are not copies of each other


def test_dtype_is_a_cast_of_the_float32_draw() -> None:
    """The same draw whatever the target dtype (and device: drawn on CPU, then moved)."""
    cfg = PRESETS["tiny"]
    full, half = random_weights(cfg, 1), random_weights(cfg, 1, torch.bfloat16)
    assert all(torch.equal(half[k], full[k].to(torch.bfloat16)) for k in full)


def test_statistics_follow_the_init() -> None:
    w = random_weights(PRESETS["tiny"], 0)
    assert torch.equal(w["model.norm.weight"], torch.ones(64))
    gate = w["model.layers.1.mlp.gate_proj.weight"]
    assert abs(gate.std().item() - 0.02) < 0.002 and abs(gate.mean().item()) < 0.002


@pytest.mark.parametrize(
    "name,billions",
    [("smollm2-135m", 0.135), ("llama-3.2-1b", 1.24), ("llama-3-8b", 8.03)],
)
def test_presets_have_the_published_parameter_counts(name: str, billions: float) -> None:
    assert num_parameters(PRESETS[name]) / 1e9 == pytest.approx(billions, rel=0.01)


def test_spec_parsing() -> None:
    assert parse_random_spec("random:llama-3.2-1b") == ("llama-3.2-1b", 0)
    assert parse_random_spec("random:tiny@7") == ("tiny", 7)
    with pytest.raises(InvalidParameterError, match="unknown random-weight preset 'gpt-5'; presets: tiny"):
        parse_random_spec("random:gpt-5")
    with pytest.raises(InvalidParameterError, match="seed in 'random:tiny@x' must be an integer"):
        parse_random_spec("random:tiny@x")


def test_loaded_model_has_the_packaged_tokenizer() -> None:
    loaded = load_random_model("random:tiny@2")
    assert loaded.tokenizer.vocab_size == loaded.config.vocab_size
    assert loaded.config.eos_token_ids == [loaded.tokenizer.eos_token_id]
    assert loaded.config is not PRESETS["tiny"]  # presets are never mutated


def test_engine_runs_a_random_model_deterministically() -> None:
    from vivace.engine.llm import LLM

    def run() -> list[int]:
        llm = LLM("random:tiny@4", kv_cache_memory_bytes=4 << 20, max_model_len=128, quantization="none")
        out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
        return out[0].outputs[0].token_ids

    first = run()
    assert len(first) == 5 and first == run()
