"""The INT8 KV cache in the engine: every backend reads the same rows alike, quality stays close to
float KV on a held text, and the same budget holds about twice the blocks of bfloat16."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import make_test_llm
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.llm import LLM

pytestmark = pytest.mark.slow
HELD_TEXT = Path(__file__).resolve().parents[2] / "LICENSE"  # prose nobody here wrote


@pytest.fixture(scope="module")
def held_ids() -> list[int]:
    llm = make_test_llm()
    return llm.engine.tokenize_prompt(HELD_TEXT.read_text())[:600]


def _scores(llm: LLM, ids: list[int]) -> tuple[torch.Tensor, list[int]]:
    out = llm.generate([ids], SamplingParams(max_tokens=1, prompt_logprobs=1))[0]
    assert llm.engine.scheduler.kv.num_used == 0
    return torch.tensor([t.logprob for t in out.prompt_logprobs]), [t.top[0][0] for t in out.prompt_logprobs]


@pytest.fixture(scope="module")
def float_kv(held_ids) -> tuple[torch.Tensor, list[int]]:
    return _scores(make_test_llm(attention_backend="torch"), held_ids)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_int8_kv_stays_close_to_float_kv_on_a_held_text(backend, held_ids, float_kv) -> None:
    if backend == "cpu" and load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    # Small chunks: most positions attend over K/V read back from int8 rows, not the fresh values.
    llm = make_test_llm(kv_cache_dtype="int8", attention_backend=backend, max_num_batched_tokens=64)
    logprobs, top1 = _scores(llm, held_ids)
    ref_logprobs, ref_top1 = float_kv
    ppl, ref_ppl = math.exp(-logprobs.mean().item()), math.exp(-ref_logprobs.mean().item())
    agreement = sum(a == b for a, b in zip(top1, ref_top1, strict=True)) / len(top1)
    assert abs(ppl / ref_ppl - 1) < 0.02, (ppl, ref_ppl)
    assert agreement >= 0.97
    assert not torch.equal(logprobs, ref_logprobs)  # the int8 rows were really used


def test_backends_read_int8_rows_alike(held_ids) -> None:
    if load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    prompts = [held_ids[:200], held_ids[100:180]]
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, logprobs=0)
    outs = {
        backend: make_test_llm(kv_cache_dtype="int8", attention_backend=backend).generate(prompts, params)
        for backend in ("torch", "cpu")
    }
    for ours, theirs in zip(outs["cpu"], outs["torch"], strict=True):
        assert ours.outputs[0].token_ids == theirs.outputs[0].token_ids
        ours_lp = torch.tensor([t.logprob for t in ours.outputs[0].logprobs])
        theirs_lp = torch.tensor([t.logprob for t in theirs.outputs[0].logprobs])
        # The kernel sets differ in float32 rounding before quantization, so a value on a rounding
        # boundary can land one int8 step apart; the rows themselves are read alike (test_cpu_ops),
        # so single tokens may move by ~0.1 nats; on average the two kernel sets must agree closely.
        assert (ours_lp - theirs_lp).abs().mean() < 0.03


def test_the_same_budget_holds_about_twice_the_blocks_of_bfloat16() -> None:
    blocks = {
        dtype: make_test_llm(kv_cache_dtype=dtype, max_num_seqs=512).engine.scheduler.kv.num_blocks
        for dtype in ("bfloat16", "int8")
    }
    head_dim = 64  # SmolLM2-135M
    assert blocks["int8"] / blocks["bfloat16"] == pytest.approx(2 * head_dim / (head_dim + 2), rel=0.01)


def test_an_unknown_kv_dtype_names_the_field() -> None:
    with pytest.raises(InvalidParameterError, match="kv_cache_dtype"):
        make_test_llm(kv_cache_dtype="int4")
