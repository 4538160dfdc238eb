"""Qwen3 (QK-norm) and Gemma 3 (sliding-window local layers, MQA, (1 + w) norms, GeGLU, logit
soft-capping) on tiny random-weight HF directories against transformers' own implementations.

Every case runs on the torch reference kernels and the C++ CPU kernels: prefill logits at every
position of a prompt four times the sliding window, the same prompt prefilled in chunks that
cross the window's edge, a prompt whose cached prefix (reused blocks) is longer than the window,
and greedy continuations of several prompts decoded together.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_hf_models import engine_prefill_logits, write_random_hf_model
from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.llm import LLM

pytestmark = pytest.mark.slow

WINDOW = 37  # not a multiple of the block size (16): the window's edge falls inside a block
COMMON = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
)
FAMILIES = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_hidden_layers=2, num_key_value_heads=2, rope_theta=1e6)),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            num_hidden_layers=3,
            num_key_value_heads=1,  # multi-query attention, as Gemma 3 270M
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            query_pre_attn_scalar=24,  # a scale other than head_dim's
            final_logit_softcapping=30.0,
        ),
    ),
}
KERNEL_SETS = ["torch", "cpu"]


def _ids(n: int, seed: int) -> list[int]:
    return [int(t) for t in torch.randint(3, 49000, (n,), generator=torch.Generator().manual_seed(seed))]


def _write(path: Path, family: str, model_path: str) -> torch.nn.Module:
    config_cls, model_cls, extra = FAMILIES[family]
    return write_random_hf_model(path, config_cls, model_cls, {**COMMON, **extra}, model_path)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_path: str):
    path = tmp_path_factory.mktemp(request.param)
    return request.param, path, _write(path, request.param, model_path)


@pytest.fixture(params=KERNEL_SETS)
def kernels(request: pytest.FixtureRequest) -> str:
    if request.param == "cpu" and load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    return request.param


def _llm(path: Path, kernels: str, **options) -> LLM:
    return LLM(str(path), quantization="none", attention_backend=kernels, kv_cache_memory_bytes=16 << 20, **options)


def _reference_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-3 * max(1.0, theirs.abs().max().item()), f"max |logit difference| {diff}"
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_prefill_logits_at_every_position(family, kernels) -> None:
    name, path, reference = family
    llm = _llm(path, kernels)
    if name == "gemma3":
        assert [llm.engine.model_config.layer_window(i) for i in range(3)] == [WINDOW, None, WINDOW]
    ids = _ids(4 * WINDOW, seed=1)
    first, ours, steps = engine_prefill_logits(llm, ids)
    assert (first, steps) == (0, 1)
    _assert_close(ours, _reference_logits(reference, ids))


def test_chunked_prefill_across_the_window_edge(family, kernels) -> None:
    name, path, reference = family
    llm = _llm(path, kernels, max_num_batched_tokens=24)  # chunks of 24: several cross a window edge
    ids = _ids(4 * WINDOW, seed=2)
    first, ours, steps = engine_prefill_logits(llm, ids)
    assert (first, steps) == (0, -(-len(ids) // 24))
    _assert_close(ours, _reference_logits(reference, ids))


def test_prefix_longer_than_the_window_from_the_cache(family, kernels) -> None:
    name, path, reference = family
    llm = _llm(path, kernels)
    shared = _ids(3 * WINDOW, seed=3)
    llm.generate([shared + _ids(20, seed=4)], SamplingParams(max_tokens=1))
    ids = shared + _ids(30, seed=5)
    first, ours, _ = engine_prefill_logits(llm, ids)
    assert first == len(shared) // 16 * 16 and first > WINDOW  # the cached blocks cover more than a window
    _assert_close(ours, _reference_logits(reference, ids)[first:])


def test_greedy_continuations(family, kernels) -> None:
    name, path, reference = family
    llm = _llm(path, kernels)
    prompts = [_ids(n, seed=10 + n) for n in (5, WINDOW + 3, 3 * WINDOW)]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=2 * WINDOW, ignore_eos=True))
    for ids, out in zip(prompts, outs, strict=True):
        with torch.inference_mode():
            expected = reference.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=2 * WINDOW,
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(ids) :].tolist()
        assert out.outputs[0].token_ids == expected
    assert llm.engine.scheduler.kv.num_used == 0
