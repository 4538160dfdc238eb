"""Sliding-window KV on a tiny random-weight Gemma 3 against transformers, under a KV budget that only
fits because local layers keep just their window's blocks.

The config has six layers (local, local, global, local, local, global): three KV groups of two layers
(kv_groups.py), so each KV tensor is shared by a global and two local layers. Prompts are four times
the window and are prefilled in chunks that cross its edge; several run at once on a pool that
forces preemption, a prefix comes back from the cache after its first window blocks were evicted,
int8 KV and speculative decoding run on the same tight pool. No block leaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_hf_models import engine_prefill_logits, write_random_hf_model
from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.kv_cache_manager import block_hash, group_key
from vivace.engine.llm import LLM
from vivace.engine.scheduler import RequestTooLargeError

pytestmark = pytest.mark.slow

WINDOW = 37  # not a multiple of the block size (16)
CHUNK = 32  # max_num_batched_tokens: prefill chunks cross the window's edge
CONFIG = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    num_hidden_layers=6,
    sliding_window=WINDOW,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
    query_pre_attn_scalar=24,
    final_logit_softcapping=30.0,
)
# A block id holds 16 tokens of K and V of one group's two layers, one KV head of 16 float32s.
BLOCK_BYTES = 16 * 2 * 2 * 16 * 4
# 30 blocks: a 190-token sequence needs 12 global blocks + 2 x 6 window-and-chunk blocks = 24 of them;
# with every layer in one table it would need 12 blocks three times this size (36).
BUDGET = 30 * BLOCK_BYTES


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("gemma3-swa")
    return path, write_random_hf_model(path, "Gemma3TextConfig", "Gemma3ForCausalLM", CONFIG, model_path)


@pytest.fixture(params=["torch", "cpu"])
def kernels(request: pytest.FixtureRequest) -> str:
    if request.param == "cpu" and load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    return request.param


def _llm(path: Path, kernels: str, **options) -> LLM:
    options = {"kv_cache_memory_bytes": BUDGET, "max_num_batched_tokens": CHUNK, **options}
    return LLM(str(path), quantization="none", attention_backend=kernels, **options)


def _ids(n: int, seed: int) -> list[int]:
    return [int(t) for t in torch.randint(3, 49000, (n,), generator=torch.Generator().manual_seed(seed))]


def _greedy(reference: torch.nn.Module, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = reference.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=n,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-3 * max(1.0, theirs.abs().max().item()), f"max |logit difference| {diff}"
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_the_budget_fits_only_with_window_freeing(gemma) -> None:
    path, _ = gemma
    llm = _llm(path, "torch")
    kv = llm.engine.scheduler.kv
    assert [g.window for g in kv.layout.groups] == [None, WINDOW, WINDOW] and kv.layout.group_size == 2
    assert kv.num_blocks == 30
    llm.engine.validate_request(_ids(150, 0), SamplingParams(max_tokens=40))
    single = _llm(path, "torch", disable_hybrid_kv_cache_manager=True)
    assert len(single.engine.scheduler.kv.layout.groups) == 1 and single.engine.scheduler.kv.num_blocks == 10
    with pytest.raises(RequestTooLargeError):
        single.engine.validate_request(_ids(150, 0), SamplingParams(max_tokens=40))


def test_concurrent_greedy_continuations_match_transformers_under_preemption(gemma, kernels) -> None:
    path, reference = gemma
    llm = _llm(path, kernels)
    prompts = [_ids(4 * WINDOW, seed=20 + i) for i in range(3)]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))
    for ids, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == _greedy(reference, ids, 40)
    stats = llm.engine.stats()
    assert stats["preemptions"] > 0  # three sequences never fit at once: recomputed after preemption
    assert llm.engine.scheduler.kv.num_used == 0


def test_prefix_hit_after_the_first_window_blocks_were_evicted(gemma, kernels) -> None:
    path, reference = gemma
    llm = _llm(path, kernels)
    kv = llm.engine.scheduler.kv
    shared = _ids(192, seed=30)  # 36 blocks over the groups, on a pool of 30: the oldest released are evicted
    llm.generate([shared], SamplingParams(max_tokens=1))
    first_block = block_hash(b"", shared[:16])
    assert kv.pool.lookup(group_key(first_block, 0)) is not None  # global blocks all stay cached
    assert kv.pool.lookup(group_key(first_block, 1)) is None  # a window's first block was evicted
    ids = shared + _ids(12, seed=31)
    first, ours, steps = engine_prefill_logits(llm, ids)
    assert first == 192 and steps == 1  # the whole prefix came from the cache
    with torch.inference_mode():
        theirs = reference(torch.tensor([ids])).logits[0].float()
    _assert_close(ours, theirs[first:])
    assert kv.num_used == 0


def test_int8_kv_with_window_freeing_equals_int8_kv_over_whole_tables(gemma) -> None:
    path, _ = gemma
    if load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    ids = _ids(4 * WINDOW, seed=40)
    logits = []
    for options in ({}, {"disable_hybrid_kv_cache_manager": True, "kv_cache_memory_bytes": 1 << 22}):
        llm = _llm(path, "cpu", kv_cache_dtype="int8", **options)
        first, chunk_logits, steps = engine_prefill_logits(llm, ids)
        assert (first, steps) == (0, -(-len(ids) // CHUNK))
        logits.append(chunk_logits)
        assert llm.engine.scheduler.kv.num_used == 0
    # The same int8 values read through tables with released blocks, or through whole ones.
    assert torch.equal(logits[0], logits[1])


def test_speculative_decoding_rolls_back_within_the_window_groups(gemma, kernels) -> None:
    path, reference = gemma
    llm = _llm(path, kernels, speculative="ngram:k=4,max_n=3,min_n=1")
    pattern = _ids(20, seed=50)
    prompts = [pattern * 7, _ids(3 * WINDOW, seed=51)]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True))
    for ids, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == _greedy(reference, ids, 30)
    assert llm.engine.stats()["spec_decode_num_drafts"] > 0
    assert llm.engine.scheduler.kv.num_used == 0
